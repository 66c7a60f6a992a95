"""The speakers task: turns and clusters from microphone windows, persistence, naming, privacy, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tasks.base import RejectedInput
from agent.tasks.speakers.config import SpeakersConfig
from agent.tasks.speakers.task import SpeakersTask
from agent.windowing import Window
from sensors.errors import ConfigError
from sensors.simulate.speech import Voice
from sensors.wire import Kind
from tests.cli_runner import cli, config_dict, fails_with
from tests.speakers_support import HIGH, LOW, ORIGIN_NS, RATE, dialogue, make_task, run, standin, turns, windows


@pytest.fixture(scope="module")
def conversation() -> tuple[np.ndarray, list[tuple[float, float, Voice]]]:
    return dialogue([LOW, HIGH, LOW, HIGH])


class TestTurnsAndClusters:
    def test_two_speakers_taking_turns_get_two_clusters(self, tmp_path: Path, conversation: tuple) -> None:
        """Low, high, low, high voice: four turns at the right source times, clusters a, b, a, b."""
        audio, truth = conversation
        drafts = run(make_task(tmp_path), windows(audio))
        found = turns(drafts)
        assert len(found) == 4, found
        labels = [turn["cluster"] for turn in found]
        assert labels[0] == labels[2] != labels[1] == labels[3]
        for turn, draft, (start, end, _) in zip(found, [d for d in drafts if d.type == "speaker_turn"], truth,
                                                strict=True):
            assert abs(draft.source_time_ns - (ORIGIN_NS + start * 1e9)) < 0.3e9
            assert abs(turn["duration_s"] - (end - start)) < 0.5
            assert turn["microphone"] == "mic-01" and 0 <= turn["confidence"] <= 1 and turn["name"] is None
        changes = [d.body for d in drafts if d.type == "speakers_changed"]
        assert [(c["change"], c["count"]) for c in changes] == [("new", 1), ("new", 2)]

    def test_any_common_rate_and_channel_count(self, tmp_path: Path, conversation: tuple) -> None:
        """48 kHz stereo float32 audio gives the same turns as 16 kHz mono int16."""
        audio, _ = conversation
        from scipy.signal import resample_poly

        stereo = np.repeat(resample_poly(audio, 3, 1).astype(np.float32)[:, None], 2, axis=1) * 0.8
        found = turns(run(make_task(tmp_path), windows(stereo, rate=48_000, int16=False)))
        labels = [turn["cluster"] for turn in found]
        assert len(labels) == 4 and labels[0] == labels[2] != labels[1] == labels[3]

    def test_audio_never_leaves_unless_configured(self, tmp_path: Path, conversation: tuple) -> None:
        """No attachment by default; with publish_audio each turn carries its audio as a 16 kHz WAV."""
        audio, _ = conversation
        quiet = [d for d in run(make_task(tmp_path / "a"), windows(audio)) if d.type == "speaker_turn"]
        assert quiet and all(d.attachment is None for d in quiet)
        loud = [d for d in run(make_task(tmp_path / "b", publish_audio=True), windows(audio))
                if d.type == "speaker_turn"]
        with wave.open(io.BytesIO(loud[0].attachment)) as reader:
            assert reader.getframerate() == RATE and reader.getnchannels() == 1
            assert abs(reader.getnframes() / RATE - loud[0].body["duration_s"]) < 0.3


class TestPersistenceAndNames:
    def test_clusters_survive_a_restart(self, tmp_path: Path, conversation: tuple) -> None:
        """After close and a new task on the same state dir, a known voice joins its old cluster."""
        audio, _ = conversation
        task = make_task(tmp_path)
        first = turns(run(task, windows(audio)))
        task.close()
        assert (tmp_path / "state" / "speakers" / "mic-01.json").exists()
        again = turns(run(make_task(tmp_path), windows(dialogue([HIGH, LOW])[0], start_ns=ORIGIN_NS + 10**11)))
        assert [turn["cluster"] for turn in again] == [first[1]["cluster"], first[0]["cluster"]]
        assert not any(turn["new_cluster"] for turn in again)

    def test_state_is_saved_periodically_and_when_forgotten(self, tmp_path: Path, conversation: tuple) -> None:
        """A tick after save_interval_s writes the clusters; forgetting the microphone saves and drops it."""
        audio, _ = conversation
        task = make_task(tmp_path, save_interval_s=0.001)
        run(task, windows(audio))
        path = tmp_path / "state" / "speakers" / "mic-01.json"
        assert not path.exists()
        time.sleep(0.01)  # past the (1 ms) save interval; the clock, not a wait for another thread
        task.tick(time.time_ns())
        saved = json.loads(path.read_text())
        assert len(saved["clusters"]) == 2 and saved["history"]["turns"] == 4
        assert saved["input"]["samples"] == len(audio) // 8000 * 8000 and saved["input"]["breaks"] == 0
        assert set(saved) == {"version", "next_id", "history", "clusters", "input"}  # no audio, no turn embeddings
        assert set(saved["clusters"][0]) == {"id", "centroid", "turns", "seconds", "name", "first_ns", "last_ns"}
        task.forget("mic-01")
        assert "mic-01" not in task.microphones and path.exists()

    def test_a_cluster_named_with_the_command_keeps_its_name(self, tmp_path: Path, conversation: tuple) -> None:
        """``edge-agent speakers name`` names a saved cluster; a running task picks it up at its next tick and
        a restarted one has it from its saved state."""
        audio, _ = conversation
        task = make_task(tmp_path)
        low = turns(run(task, windows(audio)))[0]["cluster"]
        task._save("mic-01", task.microphones["mic-01"])
        config = tmp_path / "agent.yaml"
        config.write_text(yaml.safe_dump(config_dict(tmp_path / "state", tasks={})))
        result = cli("speakers", "--config", config, "name", "mic-01", str(low), "Alice")
        assert result.returncode == 0, result.stderr
        fails_with(cli("speakers", "--config", config, "name", "mic-01", "99", "Bob"), 1, "no cluster 99")
        fails_with(cli("speakers", "--config", config, "name", "mic-77", "0", "Bob"), 1, "no saved clusters")
        task.tick(time.time_ns())
        later = turns(run(task, windows(dialogue([LOW])[0], start_ns=ORIGIN_NS + 10**11)))
        assert later[0]["name"] == "Alice"
        task.close()
        restarted = turns(run(make_task(tmp_path), windows(dialogue([LOW])[0], start_ns=ORIGIN_NS + 10**12)))
        assert restarted[0]["name"] == "Alice"
        listing = cli("speakers", "--config", config, "list")
        assert f"mic-01 cluster {low}: Alice" in listing.stdout


class TestBadInput:
    def window(self, samples: np.ndarray, rate: float = RATE, start_ns: int = ORIGIN_NS) -> Window:
        return Window("mic-01", Kind.AUDIO, np.asarray(samples, np.float32).reshape(len(samples), -1), rate,
                      start_ns, 0)

    def test_wrong_rates_are_rejected_with_the_reason(self, tmp_path: Path) -> None:
        task = make_task(tmp_path)
        for rate in (4000.0, 22050.5, 400_000.0):
            with pytest.raises(RejectedInput, match="sample rate"):
                task.process(self.window(np.zeros(int(rate // 2)), rate))

    def test_nan_and_heavy_clipping_are_rejected_light_clipping_counted(self, tmp_path: Path) -> None:
        task = make_task(tmp_path)
        samples = np.zeros(8000)
        samples[100] = np.nan
        with pytest.raises(RejectedInput, match="1 NaN"):
            task.process(self.window(samples))
        with pytest.raises(RejectedInput, match="clipped"):
            task.process(self.window(np.full(8000, 32767.0)))
        light = np.zeros(8000)
        light[:40] = 32767
        assert task.process(self.window(light, start_ns=ORIGIN_NS + 10**9)) == []
        assert task.microphones["mic-01"].clipped_samples == 8000 + 40

    def test_hours_of_silence_grow_nothing(self, tmp_path: Path) -> None:
        """An hour of silence (and a minute of low noise): no events, no clusters, a bounded buffer."""
        task = make_task(tmp_path, window_s=5.0, hop_s=5.0)
        silence = np.zeros((5 * RATE, 1), np.float32)
        started = time.process_time()
        for index in range(720):
            assert task.process(Window("mic-01", Kind.AUDIO, silence, RATE, ORIGIN_NS + index * 5 * 10**9, index)) == []
        rng = np.random.default_rng(0)
        for index in range(720, 732):
            noise = np.round(rng.standard_normal((5 * RATE, 1)) * 30).astype(np.float32)
            assert task.process(Window("mic-01", Kind.AUDIO, noise, RATE, ORIGIN_NS + index * 5 * 10**9, index)) == []
        microphone = task.microphones["mic-01"]
        assert not microphone.clusters.clusters and not microphone.clusters.memory
        assert len(microphone.diarizer.tracker.buffer) < RATE
        assert microphone.breaks == 0
        assert time.process_time() - started < 120

    def test_a_microphone_that_goes_away_and_comes_back(self, tmp_path: Path) -> None:
        """A gap in source time is a break (counted): the open speech is dropped, clusters carry on."""
        task = make_task(tmp_path)
        audio, _ = dialogue([LOW, HIGH])
        first = turns(run(task, windows(audio)))
        cut = windows(dialogue([HIGH, LOW])[0], start_ns=ORIGIN_NS + 600 * 10**9)
        half = windows(audio)[: len(windows(audio)) // 3]  # it goes away in mid-sentence
        run(task, windows(audio, start_ns=ORIGIN_NS + 300 * 10**9)[: len(half)])
        second = turns(run(task, cut))
        assert task.microphones["mic-01"].breaks == 2
        assert [t["cluster"] for t in second] == [first[1]["cluster"], first[0]["cluster"]]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.sampled_from([8000.0, 11025.0, 16000.0, 44100.0, 48000.0, 3.0, 16000.5]),
                              st.integers(1, 3), st.sampled_from(["speech", "noise", "nan", "clip", "zeros"]),
                              st.integers(-5, 5)), min_size=1, max_size=12))
    def test_any_input_is_used_or_rejected_never_a_crash(self, tmp_path: Path, plan: list) -> None:
        """Random rates, channel counts, NaN, clipping, silence and jumps in time: each window is processed or
        rejected with RejectedInput; clusters stay within max_clusters."""
        task = make_task(tmp_path, max_clusters=3)
        rng = np.random.default_rng(len(plan))
        time_ns = ORIGIN_NS
        for rate, channels, content, jump in plan:
            with contextlib.suppress(RejectedInput):
                task.process(Window("mic-01", Kind.AUDIO, _content(rng, content, int(rate * 0.5) or 1, channels),
                                    rate, time_ns, 0))
            time_ns += 500_000_000 + jump * 100_000_000
        for microphone in task.microphones.values():
            assert len(microphone.clusters.clusters) <= 3


def _content(rng: np.random.Generator, content: str, size: int, channels: int) -> np.ndarray:
    if content == "speech":  # a loud warble: the VAD may or may not take it
        return (rng.standard_normal((size, channels)) * 3000 * np.sin(np.arange(size) / 50)[:, None]).astype("f4")
    if content == "noise":
        return (rng.standard_normal((size, channels)) * 0.1).astype(np.float32)
    value = {"nan": np.nan, "clip": -32768.0, "zeros": 0.0}[content]
    return np.full((size, channels), value, dtype=np.float32)


class TestConfig:
    def test_hop_must_equal_window(self) -> None:
        with pytest.raises(ValueError, match="must equal window_s"):
            SpeakersConfig(window_s=1.0, hop_s=0.5)

    def test_thresholds_come_from_the_manifest_unless_set(self, tmp_path: Path) -> None:
        """The config's thresholds override the manifest's; a manifest without them fails the preflight."""
        manifest = standin(tmp_path / "full")
        assert make_task(tmp_path, model=manifest, assign_distance=0.05).thresholds.assign_distance == 0.05
        assert make_task(tmp_path, model=manifest).thresholds.change_distance == 0.2
        bare = standin(tmp_path / "bare")
        text = bare.read_text().replace("  change_distance: 0.2\n", "")
        bare.write_text(text)
        with pytest.raises(ConfigError, match="change_distance"):
            SpeakersTask.check(SpeakersConfig(model=bare))
        SpeakersTask.check(SpeakersConfig(model=bare, change_distance=0.3))

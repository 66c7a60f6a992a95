"""The speakers task's run-time pieces: silero-vad through ONNX Runtime, turns, change points, on-line clusters."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.runtime.manifest import file_sha256
from models.speakers.runtime.clusters import ClusterSettings, SpeakerClusters
from models.speakers.runtime.embedding import normalise
from models.speakers.runtime.turns import Speech, TurnSettings, TurnTracker, change_points, split_at_changes
from models.speakers.runtime.vad import CHUNK, VAD_MODEL, SileroVad
from tests.speakers_support import HIGH, LOW, RATE, speech

PROVENANCE = VAD_MODEL.with_suffix(".PROVENANCE")


class TestSileroVad:
    def test_the_shipped_model_is_the_one_the_provenance_names(self) -> None:
        """silero_vad.onnx matches the sha256 in its provenance note, and its MIT licence ships beside it."""
        assert file_sha256(VAD_MODEL) in PROVENANCE.read_text()
        assert "MIT License" in VAD_MODEL.with_suffix(".LICENSE").read_text()

    def test_its_inputs_and_outputs_are_what_the_stream_feeds(self) -> None:
        """input [batch, samples], state [2, batch, 128] and sr; output [batch, 1] and stateN."""
        session = ort.InferenceSession(str(VAD_MODEL), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in session.get_inputs()}
        assert list(shapes) == ["input", "state", "sr"]
        assert len(shapes["input"]) == 2 and shapes["state"][0] == 2 and shapes["state"][2] == 128
        assert shapes["sr"] == []
        assert [o.name for o in session.get_outputs()] == ["output", "stateN"]

    def test_speech_is_found_and_silence_is_not(self) -> None:
        """Synthetic speech gets high probabilities, the silence and low noise around it low ones."""
        clip = speech(LOW, "Could you check the pressure gauge before lunch, please?")
        noise = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 1e-3
        stream = SileroVad().stream()
        before, during, after = stream.feed(noise), stream.feed(clip), stream.feed(noise)
        assert before.max() < 0.3 and after[-5:].max() < 0.3
        assert np.mean(during > 0.5) > 0.6

    def test_any_window_length_gives_the_same_probabilities(self) -> None:
        """Feeding the stream in odd pieces gives the same chunk probabilities as feeding it whole."""
        clip = speech(HIGH, "I think the bearing needs replacing next week.")
        whole = SileroVad().stream().feed(clip)
        stream = SileroVad().stream()
        pieces = np.concatenate([stream.feed(clip[i : i + 777]) for i in range(0, len(clip), 777)])
        assert len(whole) == len(pieces) == len(clip) // CHUNK
        np.testing.assert_allclose(whole, pieces, atol=1e-5)


class TestTurns:
    def tracker(self, **settings: float) -> TurnTracker:
        return TurnTracker(SileroVad().stream(), TurnSettings(**settings))

    def test_a_pause_ends_a_turn(self) -> None:
        """Two sentences with a 1 s pause are two turns, at the speech's place in the stream."""
        first, second = speech(LOW, "The pump is hot."), speech(LOW, "Please check the gauge now.")
        pause = np.zeros(RATE, np.float32)
        audio = np.concatenate((pause, first, pause, second, pause))
        found = self.tracker().feed(audio)
        assert len(found) == 2
        assert abs(found[0].start / RATE - 1.0) < 0.15
        assert abs(found[1].start / RATE - (2.0 + len(first) / RATE)) < 0.15
        assert abs(found[1].end / RATE - (2.0 + (len(first) + len(second)) / RATE)) < 0.3

    def test_a_short_pause_does_not(self) -> None:
        """A pause shorter than min_pause_s keeps one turn."""
        first, second = speech(LOW, "The pump is hot."), speech(LOW, "Please check the gauge now.")
        audio = np.concatenate((first, np.zeros(int(0.15 * RATE), np.float32), second, np.zeros(RATE, np.float32)))
        assert len(self.tracker(min_pause_s=0.5).feed(audio)) == 1

    def test_long_speech_is_cut_at_max_turn(self) -> None:
        """Speech without a pause is cut every max_turn_s, and the buffer stays bounded."""
        clip = speech(HIGH, " ".join(["The compressor needs an oil change next month"] * 4))
        tracker = self.tracker(max_turn_s=3.0, min_pause_s=2.0)
        found = tracker.feed(clip)
        assert len(found) >= 2 and all(item.forced for item in found)
        assert all(item.end - item.start <= 3 * RATE + CHUNK for item in found)
        assert len(tracker.buffer) <= 4 * RATE

    def test_a_speaker_change_inside_speech_splits_it(self) -> None:
        """Embeddings that jump from one speaker to another in the middle give one change point there."""
        rng = np.random.default_rng(1)
        a, b = normalise(rng.standard_normal(16)), normalise(rng.standard_normal(16))
        sequence = np.stack([a] * 20 + [b] * 15) + rng.standard_normal((35, 16)).astype(np.float32) * 0.02
        assert change_points(normalise(sequence), window=7, threshold=0.3) == [20]
        assert change_points(normalise(np.stack([a] * 35)), window=7, threshold=0.3) == []
        turns = split_at_changes(Speech(0, 35 * 3200, np.zeros(35 * 3200, np.float32), 0, False),
                                 normalise(sequence), TurnSettings(), 0.3)
        assert len(turns) == 2 and all(turn.overlap for turn in turns)
        assert turns[0].end == turns[1].start


class _ScriptedVad:
    """A VadStream stand-in that returns given probabilities (the tracker's logic without the model)."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = probabilities
        self.chunks = 0
        self.pending = 0

    def reset(self) -> None:
        self.chunks = 0

    def feed(self, audio: np.ndarray) -> np.ndarray:
        self.pending += len(audio)
        whole, self.pending = self.pending // CHUNK, self.pending % CHUNK
        out = np.array([self.probabilities[(self.chunks + i) % len(self.probabilities)] for i in range(whole)])
        self.chunks += whole
        return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=400), st.lists(st.integers(1, 20_000), min_size=1,
                                                                      max_size=40))
def test_turns_stay_within_their_bounds_whatever_the_voice_activity(probabilities: list[float],
                                                                    pieces: list[int]) -> None:
    """Any sequence of speech probabilities, fed in pieces of any size: turns are ordered, no shorter than
    min_turn_s, no longer than max_turn_s, their audio matches, and the buffer never holds more than a turn."""
    settings_ = TurnSettings(min_turn_s=0.6, max_turn_s=3.0, min_pause_s=0.3)
    tracker = TurnTracker(_ScriptedVad(probabilities), settings_)  # type: ignore[arg-type]
    found = []
    for size in pieces * 3:
        found += tracker.feed(np.ones(size, np.float32) * 0.1)
        assert len(tracker.buffer) <= (3.0 + 0.1) * RATE + 2 * CHUNK
    for item in found:
        assert 0.6 * RATE <= item.end - item.start <= 3.0 * RATE
        assert item.audio_start <= item.start and len(item.audio) >= item.end - item.start
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def clusters(**settings: int) -> SpeakerClusters:
    return SpeakerClusters(ClusterSettings(**settings), assign_distance=0.2, distance_cut=0.3)


def voice(rng: np.random.Generator, centre: np.ndarray, spread: float = 0.05) -> np.ndarray:
    return normalise(centre + rng.standard_normal(centre.shape).astype(np.float32) * spread)


class TestClusters:
    def test_turns_join_their_speakers_cluster(self) -> None:
        """Three well separated speakers give three clusters, each turn in its speaker's."""
        rng = np.random.default_rng(2)
        centres = [normalise(rng.standard_normal(32)) for _ in range(3)]
        found = clusters(recluster_every=5)
        labels = [found.assign(voice(rng, centres[i % 3]), i, i + 1)[0].cluster for i in range(30)]
        assert labels == [labels[i % 3] for i in range(30)] and len(set(labels)) == 3
        assert len(found.clusters) == 3

    def test_reclustering_merges_a_speaker_split_in_two_and_keeps_the_ids(self) -> None:
        """A speaker whose first turns opened a second cluster is merged back by complete linkage; the id of
        the cluster that stays is kept and a merged change is reported."""
        rng = np.random.default_rng(3)
        centre, other = normalise(rng.standard_normal(32)), normalise(rng.standard_normal(32))
        found = SpeakerClusters(ClusterSettings(recluster_every=1000), assign_distance=0.01, distance_cut=0.3)
        for index in range(6):
            found.assign(voice(rng, centre, 0.04), index, index + 1)
            found.assign(voice(rng, other, 0.04), index, index + 1)
        before = set(found.clusters)
        assert len(before) > 2
        changes = found.recluster()
        assert len(found.clusters) == 2 and set(found.clusters) <= before
        assert {change.kind for change in changes} == {"merged"}

    def test_reclustering_splits_two_speakers_in_one_cluster(self) -> None:
        """Two speakers assigned to one cluster (a loose assign distance) are split; the old id lives on."""
        rng = np.random.default_rng(4)
        a, b = normalise(rng.standard_normal(32)), normalise(rng.standard_normal(32))
        b = normalise(a + 0.9 * b)  # about 0.3 apart
        found = SpeakerClusters(ClusterSettings(recluster_every=1000), assign_distance=0.6, distance_cut=0.2)
        for index in range(8):
            found.assign(voice(rng, a, 0.02), index, index + 1)
            found.assign(voice(rng, b, 0.02), index, index + 1)
        assert list(found.clusters) == [0]
        changes = found.recluster()
        assert [change.kind for change in changes] == ["split"] and changes[0].clusters == (0,)
        assert set(found.clusters) == {0, 1}

    def test_state_survives_a_round_trip_through_json(self) -> None:
        """Centroids, counts, names and history come back from the JSON state; no audio or turn embeddings in it."""
        rng = np.random.default_rng(5)
        centres = [normalise(rng.standard_normal(32)) for _ in range(2)]
        found = clusters()
        for index in range(10):
            found.assign(voice(rng, centres[index % 2]), index, index + 1)
        found.name(0, "Alice")
        text = json.dumps(found.state())
        again = clusters()
        again.load_state(json.loads(text), 32)
        assert {c.id: (c.turns, c.name) for c in again.clusters.values()} == \
            {c.id: (c.turns, c.name) for c in found.clusters.values()}
        assert again.assign(voice(rng, centres[0]), 20, 21)[0].cluster == found.assign(voice(rng, centres[0]), 20,
                                                                                          21)[0].cluster
        with pytest.raises(ValueError, match="shape"):
            clusters().load_state(json.loads(text), 64)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(0, 60), min_size=1, max_size=150), st.integers(0, 2**16))
    def test_cluster_state_stays_bounded(self, speakers: list[int], seed: int) -> None:
        """However many speakers come and go, clusters and remembered turns stay within their caps, and what was
        dropped is counted."""
        rng = np.random.default_rng(seed)
        centres = normalise(rng.standard_normal((61, 16)))
        found = clusters(max_clusters=5, max_turns=20, recluster_every=7)
        for index, speaker in enumerate(speakers):
            found.assign(voice(rng, centres[speaker]), index, index + 1)
            assert len(found.clusters) <= 5 and len(found.memory) <= 20
        assert found.total_turns == len(speakers)
        assert found.forgotten_turns >= len(speakers) - 20 - 0
        assert all(np.isfinite(c.centroid).all() for c in found.clusters.values())


def test_provenance_names_the_extraction_command() -> None:
    """The note says how to get the file again without installing silero-vad (which needs torch)."""
    text = PROVENANCE.read_text()
    assert "pip download silero-vad==" in text and "--no-deps" in text
    assert Path(VAD_MODEL).stat().st_size > 1_000_000

"""The speakers task in the demo: the shipped conversation, the simulated microphone, turns on the console, a
running agent on the simulator; and the DER evaluation's report."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.config import load_config
from agent.events import dumps, finalize
from agent.sinks import Outgoing
from agent.sinks.console import ConsoleSink, ConsoleSinkConfig
from agent.tasks.speakers.events import SpeakerTurn
from agent.tasks.speakers.simulate import MicrophoneSimulation
from agent.testing import RunningAgent, wait_until
from sensors.simulate.conversation import DEMO_CONVERSATION, load_demo
from sensors.wire import Kind
from tests.speakers_support import ORIGIN_NS, standin

REPO = Path(__file__).resolve().parents[1]


class TestDemoConversation:
    def test_the_asset_is_small_and_has_three_speakers(self) -> None:
        """Under 1 MB, 16 kHz, three speakers who each speak more than once, and it is packaged."""
        assert DEMO_CONVERSATION.stat().st_size < 1_000_000
        audio, truth = load_demo()
        assert 30 < len(audio) / 16_000 < 60 and np.abs(audio).max() <= 1.0
        assert sorted({u.speaker for u in truth}) == [0, 1, 2]
        assert all(sum(u.speaker == s for u in truth) >= 2 for s in range(3))
        assert "simulate/data/*.npz" in (REPO / "setup.cfg").read_text()

    def test_the_microphone_plays_it_on_a_loop_with_continuous_timing(self) -> None:
        """int16 16 kHz chunks of 0.1 s, sequence numbers and timestamps without a gap, past the loop's end."""
        [(sensor, stream)] = MicrophoneSimulation(microphones=1).streams(seed=1, start_ns=ORIGIN_NS)
        messages = list(itertools.islice(stream, 450))
        assert sensor == "mic-00" and all(m.kind is Kind.AUDIO and m.sample_rate == 16_000 for m in messages)
        assert all(m.samples.dtype == np.int16 and m.samples.shape == (1600, 1) for m in messages)
        assert [m.seq for m in messages] == list(range(450))
        assert [m.timestamp_ns for m in messages] == [ORIGIN_NS + i * 100_000_000 for i in range(450)]

    def test_the_console_prints_a_turn_on_one_line(self) -> None:
        """The demo's console sink shows speaker_turn (an info event) with only the configured fields."""
        stream = io.StringIO()
        sink = ConsoleSink(ConsoleSinkConfig(kind="console", min_severity="warning",
                                             show={"speaker_turn": ["cluster", "name", "duration_s"]}), stream=stream)
        body = SpeakerTurn(microphone="mic-00", cluster=2, name="Alice", start="x", end="y", duration_s=3.2,
                           confidence=0.9, overlap=False, new_cluster=False)
        event = finalize(body.draft("mic-00", ORIGIN_NS, "info", 0.9), "demo", "speakers")
        sink.send(Outgoing(event, dumps(event)))
        other = finalize(body.draft("mic-00", ORIGIN_NS, "info", 0.9), "demo", "speakers") | {"type": "other"}
        sink.send(Outgoing(other, dumps(other)))
        [line] = stream.getvalue().splitlines()
        assert line.endswith(" demo speakers/speaker_turn mic-00 cluster=2 name=Alice duration_s=3.2")

    def test_the_demo_config_has_the_microphone_and_prints_turns(self) -> None:
        config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        assert config["sources"][0]["speakers"]["microphones"] == 1
        assert "speaker_turn" in config["sinks"][0]["show"]
        assert config["tasks"]["speakers"]["model"] == "models/speakers"


@pytest.fixture
def demo_agent(tmp_path: Path) -> Iterator[RunningAgent]:
    config = {"device": "demo-line", "state_dir": str(tmp_path / "state"),
              "sources": [{"kind": "simulator", "seed": 7, "speakers": {"microphones": 1}}],
              "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
              "log": {"level": "warning", "format": "json"},
              "tasks": {"speakers": {"model": str(standin(tmp_path / "model")), "sensors": ["mic-*"]}}}
    running = RunningAgent(config)
    yield running
    running.stop()


def test_the_simulated_microphone_gives_turns_in_a_running_agent(tmp_path: Path, demo_agent: RunningAgent) -> None:
    """The agent on the simulator publishes the conversation's first turn and the cluster it opened."""
    path = tmp_path / "events.jsonl"

    def first_turn() -> list[dict] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines if line.endswith("}")]
        return events if any(e["type"] == "speaker_turn" for e in events) else None

    events = wait_until(first_turn, 30, 0.2, "no speaker_turn from the simulated microphone")
    turn = next(e for e in events if e["type"] == "speaker_turn")
    assert turn["sensor"] == "mic-00" and turn["task"] == "speakers" and turn["body"]["cluster"] == 0
    assert any(e["type"] == "speakers_changed" and e["body"]["change"] == "new" for e in events)


def test_the_diarization_evaluation_writes_its_report_and_timeline(tmp_path: Path) -> None:
    """One synthetic conversation through the live pipeline: a DER from pyannote.metrics and the picture."""
    from models.speakers.diarization import evaluate

    report = evaluate(standin(tmp_path / "model").parent, 1, 3, tmp_path / "out")
    assert 0 <= report["der"] < 1 and report["conversations"] == 1
    assert json.loads((tmp_path / "out" / "diarization.json").read_text())["der"] == report["der"]
    assert (tmp_path / "out" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_the_demo_config_validates_with_a_speakers_model(tmp_path: Path) -> None:
    """The demo config loads with the speakers task on mic-* and audio kept on the device (the model itself is
    checked by the preflight, once models/speakers ships)."""
    config = load_config(REPO / "config" / "demo.yaml", overrides={"state_dir": str(tmp_path)})
    assert config.tasks.speakers.sensors == ["mic-*"] and config.tasks.speakers.publish_audio is False

"""Replay end to end: recording -> ``edge-agent run --recording`` -> events -> regression check; record and tail.

``python -m tests.test_replay_e2e --update`` regenerates tests/data/replay/expected-events.jsonl from the
current agent (review the diff before committing it: it is the regression baseline).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from agent.config import MqttConnection
from agent.events import schema
from agent.replay_check import Tolerances, compare, read_events
from agent.tail import EventWatcher
from agent.testing import Subscriber, publisher, stop_client, wait_until
from sensors.recording import RecordingReader, RecordingWriter
from sensors.simulate.vibration import RunSpec, VibrationSimulator, demo_run, make_fleet
from sensors.wire import decode, encode
from tests.conftest import Broker, vibration_chunk

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "replay"
EXPECTED = DATA / "expected-events.jsonl"
START_NS = 1_780_000_000_000_000_000  # fixed, so that expected source times are stable


def write_recording(path: Path) -> Path:
    """Two machines for 60 s at 20 kHz: pump-00 healthy, pump-01 with an outer-race fault from 30 s."""
    healthy, faulty = make_fleet(2, seed=3, prefix="pump")
    runs = [(healthy, RunSpec(duration_s=60.0)),
            (faulty, demo_run("outer_race", demo_s=60.0, onset_demo_s=30.0))]
    with RecordingWriter(path) as writer:
        streams = [VibrationSimulator(machine, run, seed=11).messages(start_ns=START_NS, chunk_s=0.1)
                   for machine, run in runs]
        for chunks in zip(*streams, strict=True):
            for message in chunks:
                writer.write(encode(message), message.timestamp_ns)
        writer.write_metadata("ground_truth", {"pump-01": {"fault": "outer_race", "onset_s": 30.0}})
    return path


def config(state_dir: Path, events: Path) -> dict[str, Any]:
    return {"device": "replay-test", "state_dir": str(state_dir), "log": {"level": "warning", "format": "json"},
            "sources": [{"kind": "recording", "path": "replaced-by-the-command-line"}],
            "sinks": [{"kind": "jsonl", "path": str(events)}],
            "tasks": {"vibration": {"scorer": "mahalanobis", "sensors": ["pump-*"], "baseline_windows": 20}}}


def replay_through_agent(directory: Path) -> Path:
    """Record, then run ``edge-agent run --recording`` on it; returns the events file."""
    recording = write_recording(directory / "line.mcap")
    events = directory / "events.jsonl"
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config(directory / "state", events)))
    subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(path), "--recording",
                    str(recording)], check=True, cwd=REPO, timeout=300)
    return events


class TestReplayRegression:
    def test_recording_replayed_through_the_agent_matches_the_expected_events(self, tmp_path: Path) -> None:
        """The seeded faulty machine alarms after its onset, the healthy one does not, as in the baseline file."""
        events_path = replay_through_agent(tmp_path)
        events = read_events(events_path)
        for event in events:
            jsonschema.validate(event, schema())
        alarms = [e for e in events if e["type"] == "anomaly_raised"]
        assert {e["sensor"] for e in alarms} == {"pump-01"}
        report = compare(events, read_events(EXPECTED), Tolerances(time_s=2.0, score_relative=0.1))
        assert report.ok, report.render()

    def test_check_replay_command_flags_a_missing_alarm(self, tmp_path: Path) -> None:
        """``edge-agent check-replay`` exits 1 and names the missing event when an alarm disappears."""
        expected = read_events(EXPECTED)
        actual = tmp_path / "actual.jsonl"
        actual.write_text("".join(json.dumps(e) + "\n" for e in expected if e["type"] != "anomaly_raised"))
        result = subprocess.run([sys.executable, "-m", "agent.cli", "check-replay", str(actual), str(EXPECTED)],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "anomaly_raised" in result.stdout


class TestRecordAndReplayCommands:
    def test_record_from_mqtt_then_replay_to_mqtt(self, tmp_path: Path, broker: Broker) -> None:
        """What ``record`` captured from a broker, ``replay`` publishes again byte for byte, in order."""
        out = tmp_path / "line.mcap"
        with subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "record", "--mqtt", f"127.0.0.1:{broker.port}", "--out", str(out),
                 "--duration", "6"], cwd=REPO, stdout=subprocess.PIPE, text=True) as recorder:
            try:
                broker.wait_for_subscription("edge/sensors/+/+", timeout=30)
                sent = [encode(vibration_chunk("fan-3", seq, 1.0, samples=100)) for seq in range(20)]
                client = publisher(broker.port)
                try:
                    for raw in sent:
                        client.publish("edge/sensors/vibration/fan-3", raw, qos=1).wait_for_publish(5)
                finally:
                    stop_client(client)
                output, _ = recorder.communicate(timeout=30)
            finally:
                recorder.kill()
        assert "recorded 20 messages" in output
        with RecordingReader(out) as reader:
            assert [raw for _, _, raw in reader] == sent

        with Subscriber(broker.port, "edge/sensors/#") as replayed:
            result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(out), "--mqtt",
                                     f"127.0.0.1:{broker.port}", "--fast"], cwd=REPO, capture_output=True,
                                    text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            received = replayed.wait_for(len(sent))
        assert [decode(raw).seq for _, raw in received] == list(range(20))


class TestTail:
    def test_duplicates_are_dropped_by_event_id(self, broker: Broker) -> None:
        """An event delivered twice (at-least-once) is shown once; other events pass."""
        shown: list[str] = []
        connection = MqttConnection(host="127.0.0.1", port=broker.port)
        event = read_events(EXPECTED)[0]
        last = {**event, "event_id": "e" * 32}  # sent after the duplicate: once shown, the duplicate was handled
        with EventWatcher(connection, "+", lambda topic, message: shown.append(message["event_id"])) as watcher:
            broker.wait_for_subscription("edge/+/status")  # the watcher's last subscription
            client = publisher(broker.port)
            try:
                topic = f"edge/{event['device']}/events/{event['task']}/{event['type']}"
                for payload in (event, event, {**event, "event_id": "f" * 32}, last):
                    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
                wait_until(lambda: last["event_id"] in shown, message=f"only {shown} shown")
            finally:
                stop_client(client)
        assert shown == [event["event_id"], "f" * 32, last["event_id"]]
        assert watcher.duplicates == 1

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the expected events")
    arguments = parser.parse_args()
    import tempfile

    produced = replay_through_agent(Path(tempfile.mkdtemp()))
    if arguments.update:
        DATA.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(produced.read_text())
        print(f"wrote {EXPECTED}")
    else:
        print(produced.read_text())

"""Replay end to end: recording -> ``edge-agent run --recording`` -> events -> regression check; record and tail."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt

from agent.config import MqttConnection
from agent.events import schema
from agent.replay_check import Tolerances, compare, read_events
from agent.tail import EventWatcher
from sensors.recording import RecordingReader
from sensors.wire import decode, encode
from tests.conftest import Broker
from tests.replay_fixture import EXPECTED, replay_through_agent
from tests.support import vibration_chunk

REPO = Path(__file__).resolve().parents[1]


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
        recorder = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "record", "--mqtt", f"127.0.0.1:{broker.port}", "--out", str(out),
             "--duration", "4"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)  # the recorder subscribes
        sent = [encode(vibration_chunk("fan-3", seq, 1.0, samples=100)) for seq in range(20)]
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for raw in sent:
            client.publish("edge/sensors/vibration/fan-3", raw, qos=1).wait_for_publish(5)
        output, _ = recorder.communicate(timeout=30)
        assert "recorded 20 messages" in output
        with RecordingReader(out) as reader:
            assert [raw for _, _, raw in reader] == sent

        received: list[bytes] = []
        done = threading.Event()

        def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
            received.append(bytes(message.payload))
            if len(received) == len(sent):
                done.set()

        client.on_message = on_message
        client.subscribe("edge/sensors/#", qos=1)
        time.sleep(0.5)
        result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(out), "--mqtt",
                                 f"127.0.0.1:{broker.port}", "--fast"], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert done.wait(10)
        assert [decode(raw).seq for raw in received] == list(range(20))
        client.loop_stop()


class TestTail:
    def test_duplicates_are_dropped_by_event_id(self, broker: Broker) -> None:
        """An event delivered twice (at-least-once) is shown once; other events pass."""
        shown: list[str] = []
        connection = MqttConnection(host="127.0.0.1", port=broker.port)
        event = read_events(EXPECTED)[0]
        with EventWatcher(connection, "+", lambda topic, message: shown.append(message["event_id"])) as watcher:
            time.sleep(1.0)
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            topic = f"edge/{event['device']}/events/{event['task']}/{event['type']}"
            for payload in (event, event, {**event, "event_id": "f" * 32}):
                client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
            deadline = time.monotonic() + 5
            while len(shown) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            client.loop_stop()
        assert shown == [event["event_id"], "f" * 32]
        assert watcher.duplicates == 1

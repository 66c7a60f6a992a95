"""End to end through real parts: Mosquitto, ZeroMQ sockets, ONNX Runtime, the agent's threads."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import zmq

from agent.events import schema
from agent.testing import RunningAgent, publisher, stop_client, subscriber, wait_until, zmq_socket
from sensors import topics
from sensors.wire import Kind, encode
from tests.conftest import Broker, agent_config, free_port, vibration_chunk, write_energy_model


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_energy_model(tmp_path / "model")


@pytest.fixture
def mqtt_agent(tmp_path: Path, broker: Broker, model: Path) -> Iterator[RunningAgent]:
    mqtt_settings = {"host": "127.0.0.1", "port": broker.port}
    running = RunningAgent(agent_config(
        tmp_path / "state", model, [{"kind": "mqtt", **mqtt_settings}],
        [{"kind": "mqtt", **mqtt_settings}, {"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}]))
    yield running
    running.stop()


class TestMqttEndToEnd:
    def test_sensor_message_becomes_schema_valid_alert(self, mqtt_agent: RunningAgent, broker: Broker) -> None:
        """A loud vibration chunk published to MQTT yields an alarm on the task's alert topic."""
        client, received = subscriber(broker.port, "edge/test-device/events/#")
        sensors = publisher(broker.port)
        try:
            broker.wait_for_subscription("edge/sensors/+/+")  # the agent's source is listening
            for seq in range(3):
                message = vibration_chunk("pump-1", seq, amplitude=3.0)
                sensors.publish(topics.sensor_topic("edge", Kind.VIBRATION, "pump-1"), encode(message), qos=1)
            alert = received.get(timeout=15)
        finally:
            stop_client(client)
            stop_client(sensors)
        event = json.loads(alert.payload)
        jsonschema.validate(event, schema())
        assert alert.topic == "edge/test-device/events/probe/energy_high"
        assert event["sensor"] == "pump-1" and event["severity"] == "alarm"
        assert event["model"] == {"name": "energy-probe", "version": "1.0.0"}
        assert event["score"] == pytest.approx(4.5, rel=1e-3)

    def test_quiet_sensor_raises_nothing_and_bad_bytes_reach_the_error_topic(
            self, mqtt_agent: RunningAgent, broker: Broker) -> None:
        """A quiet signal yields no alert; garbage is rejected on the error topic and counted."""
        client, received = subscriber(broker.port, "edge/test-device/#")
        sensors = publisher(broker.port)
        try:
            broker.wait_for_subscription("edge/sensors/+/+")  # the agent's source is listening
            for seq in range(2):
                sensors.publish("edge/sensors/vibration/pump-2", encode(vibration_chunk("pump-2", seq, 0.1)), qos=1)
            sensors.publish("edge/sensors/vibration/pump-2", b"not a wire message", qos=1)
            message = received.get(timeout=10)
            while message.topic.endswith("/status"):
                message = received.get(timeout=10)
        finally:
            stop_client(client)
            stop_client(sensors)
        assert message.topic == "edge/test-device/errors"
        error = json.loads(message.payload)
        jsonschema.validate(error, schema())
        assert error["type"] == "input_rejected" and "too short" in error["body"]["reason"]
        wait_until(lambda: mqtt_agent.agent.stats.snapshot()["undecodable"] >= 1)
        snapshot = mqtt_agent.agent.stats.snapshot()
        assert snapshot["undecodable"] == 1
        assert snapshot["sensors"]["pump-2"]["received"] == 2


class TestAttachments:
    def test_jpeg_attachment_goes_to_its_image_topic(self, tmp_path: Path, broker: Broker) -> None:
        """An event's attachment (a defect crop) is published as JPEG bytes under the event's id."""
        from agent.events import EventDraft, dumps, finalize
        from agent.sinks import Outgoing, SinkEnv
        from agent.sinks.mqtt import MqttSink, MqttSinkConfig

        client, received = subscriber(broker.port, "edge/line-1/images/#")
        sink = MqttSink(MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=broker.port), SinkEnv("line-1", tmp_path))
        try:
            event = finalize(EventDraft("part_inspected", "cam-1", time.time_ns(), "alarm"), "line-1", "quality")
            jpeg = b"\xff\xd8\xff\xe0fake-crop\xff\xd9"
            sink.send(Outgoing(event, dumps(event), jpeg))
            message = received.get(timeout=10)
        finally:
            sink.close()
            stop_client(client)
        assert message.topic == f"edge/line-1/images/quality/{event['event_id']}"
        assert message.payload == jpeg


class TestZmqEndToEnd:
    def test_push_to_agent_and_events_on_pub(self, tmp_path: Path, model: Path) -> None:
        """Sensor bytes pushed over ZeroMQ come out as events on the agent's PUB socket."""
        inbound, outbound = free_port(), free_port()
        running = RunningAgent(agent_config(
            tmp_path / "state", model,
            [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{inbound}", "socket": "pull"}],
            [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{outbound}"}]))
        try:
            with zmq_socket(zmq.SUB, f"tcp://127.0.0.1:{outbound}", subscribe=b"edge/test-device/events/") as events, \
                    zmq_socket(zmq.PUSH, f"tcp://127.0.0.1:{inbound}") as push:
                # PUB/SUB joins asynchronously: loud chunks go on until the first event comes through
                seq = 0

                def event_arrived() -> bool:
                    nonlocal seq
                    push.send(encode(vibration_chunk("fan-1", seq, amplitude=2.0)))
                    seq += 1
                    return bool(events.poll(200))

                wait_until(event_arrived, timeout=30, interval=0, message="no event on the PUB socket")
                topic, payload = events.recv_multipart()
        finally:
            running.stop()
        event = json.loads(payload)
        jsonschema.validate(event, schema())
        assert topic == b"edge/test-device/events/probe/energy_high"
        assert event["sensor"] == "fan-1"

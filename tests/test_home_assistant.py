"""Home Assistant MQTT discovery: entities announced (retained) from the events, states kept up to date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.sinks import Outgoing, SinkEnv
from agent.sinks.home_assistant import HomeAssistant, HomeAssistantConfig
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.testing import Subscriber, wait_until
from tests.conftest import Broker


def event(type_: str, sensor: str, task: str = "vibration", score: float | None = 0.25,
          **body: Any) -> dict[str, Any]:
    return {"event_id": f"{type_}-{sensor}-{score}-{body}", "device": "line3", "task": task, "type": type_,
            "sensor": sensor, "severity": "info", "score": score, "source_time": "2026-12-02T10:00:00.000000Z",
            "body": body}


def home_assistant() -> HomeAssistant:
    return HomeAssistant(HomeAssistantConfig(enabled=True, reject_rate_parts=4), "edge", "line3",
                         "edge/line3/status", "1.0")


class TestEntities:
    def test_a_machine_is_announced_once_then_only_its_state_changes(self) -> None:
        ha = home_assistant()
        first = ha.on_event(event("health", "pump.01", score=0.25))
        assert [topic for topic, _ in first] == ["homeassistant/sensor/line3/vibration_pump_01_health/config",
                                                 "edge/line3/ha/vibration/pump.01/health"]
        config = json.loads(first[0][1])
        assert config["state_topic"] == "edge/line3/ha/vibration/pump.01/health"
        assert config["availability_topic"] == "edge/line3/status" and config["device"]["name"] == "edge-agent line3"
        assert first[1][1] == "0.250"
        assert ha.on_event(event("health", "pump.01", score=0.5)) == [("edge/line3/ha/vibration/pump.01/health",
                                                                        "0.500")]

    def test_alarm_state_follows_raised_and_cleared(self) -> None:
        ha = home_assistant()
        assert ha.on_event(event("anomaly_raised", "pump-01"))[-1][1] == "ON"
        assert ha.on_event(event("anomaly_cleared", "pump-01"))[-1][1] == "OFF"
        assert ha.on_event(event("baseline_ready", "pump-01")) == []

    def test_reject_rate_is_over_the_last_parts(self) -> None:
        ha = home_assistant()
        rates = [ha.on_event(event("part_inspected", "camera-00", "quality", decision=decision))[-1][1]
                 for decision in ("reject", "accept", "accept", "accept", "accept")]
        assert rates == ["100.0", "50.0", "33.3", "25.0", "0.0"]  # the window holds the last 4 parts


def test_entities_on_a_real_broker(tmp_path: Path, broker: Broker) -> None:
    """The sink announces the agent and each entity retained, so Home Assistant finds them whenever it starts."""
    config = MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=broker.port, keepalive_s=2,
                            home_assistant=HomeAssistantConfig(enabled=True))
    sink = MqttSink(config, SinkEnv("line3", tmp_path, None, lambda draft: None))
    try:
        wait_until(sink.connected.is_set, timeout=20)
        for sent in (event("health", "pump-01", score=0.1), event("anomaly_raised", "pump-01")):
            sink.send(Outgoing(sent, json.dumps(sent).encode()))
        # a late subscriber (Home Assistant starting after the agent) still gets every retained message
        wanted = {"homeassistant/binary_sensor/line3/agent_online/config",
                  "homeassistant/sensor/line3/vibration_pump-01_health/config",
                  "homeassistant/binary_sensor/line3/vibration_pump-01_alarm/config",
                  "edge/line3/ha/vibration/pump-01/health", "edge/line3/ha/vibration/pump-01/alarm"}
        late = Subscriber(broker.port, "#")
        try:
            wait_until(lambda: wanted <= {topic for topic, _ in late.received}, timeout=20)
            retained = dict(late.received)
        finally:
            late.close()
    finally:
        sink.close()
    assert retained["edge/line3/ha/vibration/pump-01/alarm"] == b"ON"
    agent_entity = json.loads(retained["homeassistant/binary_sensor/line3/agent_online/config"])
    assert agent_entity["state_topic"] == "edge/line3/status"

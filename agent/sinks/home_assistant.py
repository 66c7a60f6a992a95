"""Home Assistant MQTT discovery (opt-in, on the MQTT sink): machines, stations and the agent as entities.

Home Assistant (and Node-RED's HA nodes) find entities from retained config messages under
``{discovery_prefix}/{component}/{node}/{object}/config``, as Frigate publishes its cameras. From the
events it sends, the sink derives one small retained state per entity and announces each entity the
first time it has a state: a machine's health score and alarm state, a camera station's reject rate
over its last parts, each sensor's online state, and the agent's own connectivity.
docs/home-assistant.md lists the entities and topics.
"""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from sensors.settings import Strict

MAX_ENTITIES = 20_000  # announced entities remembered for re-announcing after a reconnect


class HomeAssistantConfig(Strict):
    """Home Assistant MQTT discovery."""

    enabled: bool = Field(default=False, description="announce entities for Home Assistant's MQTT discovery")
    discovery_prefix: str = Field(default="homeassistant", description="Home Assistant's discovery prefix")
    reject_rate_parts: int = Field(default=100, ge=1, le=100_000,
                                   description="a camera station's reject rate is over its last this many parts")


@dataclass(frozen=True)
class EntityKind:
    """One kind of entity: its Home Assistant component, name suffix and fixed discovery fields."""

    component: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


KINDS = {
    "health": EntityKind("sensor", "health score", {"state_class": "measurement", "icon": "mdi:heart-pulse"}),
    "alarm": EntityKind("binary_sensor", "alarm", {"device_class": "problem"}),
    "reject_rate": EntityKind("sensor", "reject rate", {"unit_of_measurement": "%", "state_class": "measurement"}),
    "online": EntityKind("binary_sensor", "online", {"device_class": "connectivity"}),
}
ALARM_STATES = {"anomaly_raised": "ON", "anomaly_updated": "ON", "anomaly_cleared": "OFF"}
ONLINE_STATES = {"sensor_online": "ON", "sensor_offline": "OFF"}


def _object_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


class HomeAssistant:
    """Turns events into retained entity states and discovery configs (topic, payload) to publish."""

    def __init__(self, config: HomeAssistantConfig, prefix: str, device: str, status_topic: str,
                 version: str) -> None:
        self.config = config
        self.prefix = prefix
        self.device = device
        self.status_topic = status_topic
        self.device_info = {"identifiers": [f"edge_agent_{_object_id(device)}"], "name": f"edge-agent {device}",
                            "manufacturer": "edge-agent", "model": "edge-agent", "sw_version": version}
        self.announced: collections.OrderedDict[str, str] = collections.OrderedDict()  # config topic -> payload
        self.states: collections.OrderedDict[str, str] = collections.OrderedDict()  # state topic -> last state
        self.parts: dict[str, collections.deque[bool]] = {}

    def agent_entity(self) -> tuple[str, str]:
        """The agent's own connectivity, from its status topic (online / last-will offline)."""
        node = _object_id(self.device)
        payload = {"name": "agent online", "unique_id": f"edge_agent_{node}_agent_online",
                   "state_topic": self.status_topic, "device_class": "connectivity",
                   "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
                   "device": self.device_info}
        return f"{self.config.discovery_prefix}/binary_sensor/{node}/agent_online/config", json.dumps(payload)

    def on_event(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """The messages this event calls for: a new entity's discovery config first, then its state."""
        state = self._state(event)
        if state is None:
            return []
        kind, value = state
        sensor, task = event["sensor"], event["task"]
        state_topic = f"{self.prefix}/{self.device}/ha/{task}/{sensor}/{kind}"
        messages = []
        config_topic = (f"{self.config.discovery_prefix}/{KINDS[kind].component}/{_object_id(self.device)}/"
                        f"{_object_id(f'{task}_{sensor}_{kind}')}/config")
        if config_topic not in self.announced:
            payload = json.dumps({
                "name": f"{sensor} {KINDS[kind].name}", "unique_id": f"edge_agent_{_object_id(config_topic)}",
                "state_topic": state_topic, "availability_topic": self.status_topic,
                "availability_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
                "device": self.device_info, **KINDS[kind].fields})
            self._remember(self.announced, config_topic, payload)
            messages.append((config_topic, payload))
        self._remember(self.states, state_topic, value)
        messages.append((state_topic, value))
        return messages

    def _state(self, event: dict[str, Any]) -> tuple[str, str] | None:
        kind = event["type"]
        if kind == "health" and isinstance(event.get("score"), (int, float)):
            return "health", f"{event['score']:.3f}"
        if kind in ALARM_STATES:
            return "alarm", ALARM_STATES[kind]
        if kind in ONLINE_STATES:
            return "online", ONLINE_STATES[kind]
        if kind == "part_inspected":
            parts = self.parts.get(event["sensor"])
            if parts is None:
                if len(self.parts) >= MAX_ENTITIES:
                    self.parts.pop(next(iter(self.parts)))
                parts = self.parts[event["sensor"]] = collections.deque(maxlen=self.config.reject_rate_parts)
            parts.append(event.get("body", {}).get("decision") == "reject")
            return "reject_rate", f"{100.0 * sum(parts) / len(parts):.1f}"
        return None

    def everything(self) -> list[tuple[str, str]]:
        """What to publish again after a (re)connect: the broker may have lost retained messages."""
        return [self.agent_entity(), *self.announced.items(), *self.states.items()]

    @staticmethod
    def _remember(store: collections.OrderedDict[str, str], key: str, value: str) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_ENTITIES:
            store.popitem(last=False)

"""Watching the agent's alert topics as an operator would, dropping duplicate deliveries by event id."""

from __future__ import annotations

import collections
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from agent.config import MqttConnection
from sensors import topics
from sensors.mqtt import make_client, paho_keepalive, stop_client

log = structlog.get_logger(__name__)


class Deduplicator:
    """Remembers the last ``size`` event ids; at-least-once delivery means repeats can arrive."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def first_time(self, event_id: str) -> bool:
        if event_id in self.seen:
            return False
        self.seen[event_id] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return True


class EventWatcher:
    """Subscribes to events, health, errors and status; calls ``on_message(topic, dict)`` once per event."""

    def __init__(self, connection: MqttConnection, device: str,
                 on_message: Callable[[str, dict[str, Any]], None]) -> None:
        self.connection = connection
        self.subscriptions = topics.alert_subscriptions(connection.topic_prefix, device)
        self.on_message = on_message
        self.dedup = Deduplicator()
        self.duplicates = 0
        self.connected = threading.Event()
        #: why the broker refused us, if it did
        self.refused: str | None = None
        self.client = make_client(connection, f"edge-agent-tail-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.error("tail: connection refused", reason=str(reason))
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            decoded = json.loads(message.payload)
        except ValueError:
            log.warning("tail: message is not JSON", topic=message.topic, size=len(message.payload))
            return
        if not isinstance(decoded, dict):
            return
        event_id = decoded.get("event_id")
        if isinstance(event_id, str) and not self.dedup.first_time(event_id):
            self.duplicates += 1
            return
        self.on_message(message.topic, decoded)

    def __enter__(self) -> EventWatcher:
        self.client.connect_async(self.connection.host, self.connection.port,
                                  paho_keepalive(self.connection.keepalive_s))
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        stop_client(self.client)

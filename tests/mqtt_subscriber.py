"""Test helper: a real paho-mqtt subscriber that collects (topic, payload) pairs from a test broker."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode


class Subscriber:
    """Subscribes (QoS 1) before the test publishes; ``wait_for(n)`` blocks until n messages arrived."""

    def __init__(self, port: int, topic: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.qos: list[int] = []  # the QoS each message was delivered with
        self._changed = threading.Condition()
        self._subscribed = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        with self._changed:
            if not self._changed.wait_for(lambda: self._subscribed, timeout=10):
                raise TimeoutError(f"no SUBACK for {topic}")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode],
                      properties: object) -> None:
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append((message.topic, bytes(message.payload)))
            self.qos.append(message.qos)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """The messages so far, once at least ``count`` arrived (or the timeout passed)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)

    def settle(self, quiet_s: float = 0.2) -> list[tuple[str, bytes]]:
        """The messages once none arrived for ``quiet_s`` (to catch extra, unexpected ones)."""
        seen = -1
        while seen != len(self.received):
            seen = len(self.received)
            time.sleep(quiet_s)
        return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

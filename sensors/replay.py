"""Replay of recorded sensor streams with their timing, and publishers that put them on MQTT or ZeroMQ."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Literal, Protocol

import paho.mqtt.client as mqtt
import zmq
from paho.mqtt.reasoncodes import ReasonCode

from sensors.errors import BrokerError
from sensors.mqtt import stop_client
from sensors.wire import MAGIC, Kind

Publish = Callable[[str, bytes], None]


def replay(reader: Iterable[tuple[int, str, bytes]], publish: Publish, speed: float | None = 1.0,
           stop: threading.Event | None = None) -> int:
    """Publish ``(log_time_ns, topic, wire_bytes)`` entries; returns how many were published.

    ``speed=1`` keeps the recorded timing, ``speed=N`` plays N times faster and ``None``
    as fast as ``publish`` takes them. Each message is due at its offset from the first
    one, so a slow ``publish`` is caught up on rather than accumulating drift. Setting
    ``stop`` ends the replay promptly, also during a wait.
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number or None, got {speed}")
    stop = stop or threading.Event()
    count = 0
    origin: tuple[int, float] | None = None  # (first log time, monotonic time it was published)
    for log_time_ns, topic, wire_bytes in reader:
        if stop.is_set():
            break
        if speed is not None:
            if origin is None:
                origin = (log_time_ns, time.monotonic())
            delay = origin[1] + (log_time_ns - origin[0]) / 1e9 / speed - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        publish(topic, wire_bytes)
        count += 1
    return count


def is_frame(wire_bytes: bytes) -> bool:
    """Whether the header says camera frame (kind byte at offset 5); False for anything unreadable."""
    return wire_bytes[:4] == MAGIC and len(wire_bytes) > 5 and wire_bytes[5] == Kind.FRAME


class Publisher(Protocol):
    """What ``edge-agent replay`` publishes through: ``publish`` plus a close that flushes."""

    def publish(self, topic: str, payload: bytes) -> None: ...

    def close(self) -> None: ...


class MqttPublisher:
    """Publishes wire messages to an MQTT broker (MQTT 5, paho-mqtt v2 callback API).

    QoS 1 for vibration and audio: the broker acknowledges every chunk, so a reconnect
    does not lose samples (a lost chunk would be a gap the agent has to report). QoS 0
    for frames: they are large, the agent drops old frames under overload anyway, and
    a late frame is worth less than a current one. ``close`` waits until every QoS 1
    message is acknowledged and every QoS 0 message is written to the socket.

    Pass ``client`` to use one configured elsewhere (TLS, credentials, e.g.
    ``sensors.mqtt.make_client``); this class then owns it and sets its callbacks.
    """

    def __init__(self, host: str, port: int = 1883, *, client: mqtt.Client | None = None,
                 client_id: str = "", stream_qos: int = 1, frame_qos: int = 0, max_pending: int = 1000,
                 timeout_s: float = 10.0, keepalive_s: int = 30) -> None:
        self.address = f"{host}:{port}"
        self.stream_qos, self.frame_qos = stream_qos, frame_qos
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.dropped = 0  # QoS 0 messages paho refused while disconnected
        self._changed = threading.Condition()
        self._sent = 0
        self._done = 0
        self._connack: ReasonCode | None = None
        self._client = client or mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                             protocol=mqtt.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        try:
            self._client.connect(host, port, keepalive_s)
        except OSError as error:
            raise BrokerError(f"cannot reach MQTT broker {self.address}: {error.strerror or error}; "
                              "is it running, and are host and port right?") from None
        self._client.loop_start()
        with self._changed:
            self._changed.wait_for(lambda: self._connack is not None, timeout=timeout_s)
        if self._connack is None or self._connack.is_failure:
            stop_client(self._client)
            reason = "no CONNACK" if self._connack is None else str(self._connack)
            raise BrokerError(f"MQTT broker {self.address} refused the connection: {reason}")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        with self._changed:
            self._connack = reason
            self._changed.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                    properties: object) -> None:
        with self._changed:
            self._done += 1
            self._changed.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one message; blocks while ``max_pending`` messages await acknowledgement (BrokerError after
        ``timeout_s``)."""
        qos = self.frame_qos if is_frame(payload) else self.stream_qos
        with self._changed:
            if not self._changed.wait_for(lambda: self._sent - self._done < self.max_pending,
                                          timeout=self.timeout_s):
                raise BrokerError(f"MQTT broker {self.address} acknowledged nothing for {self.timeout_s} s")
            self._sent += 1  # before publish: on_publish may run before publish() returns
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            return  # sent, or queued by paho until it has reconnected
        with self._changed:
            self._sent -= 1
            self._changed.notify_all()
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            self.dropped += 1
            return
        raise BrokerError(f"MQTT publish to {self.address} failed: {mqtt.error_string(info.rc)}")

    def close(self) -> None:
        """Wait (up to ``timeout_s``) for outstanding messages, then disconnect."""
        with self._changed:
            delivered = self._changed.wait_for(lambda: self._done >= self._sent, timeout=self.timeout_s)
            missing = self._sent - self._done
        stop_client(self._client)
        if not delivered:
            raise BrokerError(f"{missing} messages to MQTT broker {self.address} were not acknowledged "
                               f"within {self.timeout_s} s")

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class ZmqPublisher:
    """Publishes wire messages on a ZeroMQ PUB (two frames: topic, bytes) or PUSH (one frame) socket.

    The agent's ZeroMQ source binds by default, so this connects by default. PUB mode
    uses an XPUB socket with ``XPUB_NODROP``: at the high-water mark a send waits (up to
    ``send_timeout_s``) instead of silently dropping, and :meth:`wait_for_subscriber`
    can wait out ZeroMQ's slow-joiner window before a replay starts. PUSH waits for a
    connected peer the same way.
    """

    def __init__(self, endpoint: str, mode: Literal["pub", "push"] = "push", *, bind: bool = False,
                 sndhwm: int = 1000, send_timeout_s: float = 10.0, linger_s: float = 5.0) -> None:
        if mode not in ("pub", "push"):
            raise ValueError(f"mode must be 'pub' or 'push', got {mode!r}")
        self.endpoint, self.mode = endpoint, mode
        self.send_timeout_s = send_timeout_s
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB if mode == "pub" else zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.SNDTIMEO, round(send_timeout_s * 1000))
        self._socket.setsockopt(zmq.LINGER, round(linger_s * 1000))
        # Queue only to completed connections, so that a send with no peer waits and times out.
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        if mode == "pub":
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        try:
            if bind:
                self._socket.bind(endpoint)
            else:
                self._socket.connect(endpoint)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            self._context.term()
            raise BrokerError(f"cannot {'bind' if bind else 'connect'} ZeroMQ {mode} to {endpoint}: "
                                  f"{error}") from error

    def wait_for_subscriber(self, timeout_s: float = 5.0) -> bool:
        """PUB mode: True once a subscriber's subscription has arrived, False after the timeout."""
        if self.mode != "pub":
            raise ValueError("wait_for_subscriber is for mode='pub'")
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self._socket.poll(round(left * 1000), zmq.POLLIN):
                break
            if self._socket.recv()[:1] == b"\x01":  # 1 = subscribe, 0 = unsubscribe
                return True
        return False

    def publish(self, topic: str, payload: bytes) -> None:
        """Send one message; raises BrokerError if no peer takes it within ``send_timeout_s``."""
        try:
            if self.mode == "pub":
                self._socket.send_multipart([topic.encode(), payload], copy=False)
            else:
                self._socket.send(payload, copy=False)
        except zmq.Again:
            raise BrokerError(f"ZeroMQ {self.mode} {self.endpoint}: no peer took a message within "
                              f"{self.send_timeout_s} s (no peer connected, or its queue is full)") from None

    def close(self) -> None:
        """Close the socket, letting queued messages go out for up to ``linger_s``."""
        if not self._socket.closed:
            self._socket.close()
            self._context.term()

    def __enter__(self) -> ZmqPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

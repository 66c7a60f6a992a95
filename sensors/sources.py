"""Ingest sources: MQTT subscriber, ZeroMQ SUB/PULL socket, recording file, in-process simulator.

A source hands raw wire bytes to ``deliver`` from its own thread; decoding and
validation happen in the agent's dispatcher, one place for every source.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
import zmq
import zmq.auth.thread

from agent.config import (
    MqttSourceConfig,
    RecordingSourceConfig,
    SimulatorSourceConfig,
    SourceConfig,
    ZmqSourceConfig,
)
from agent.mqtt import connect_properties, make_client, paho_keepalive, report_connect_failure, stop_client
from sensors import topics

log = structlog.get_logger(__name__)
Deliver = Callable[[bytes], None]
ZMQ_OVERHEAD = 64 * 1024  # header, sensor id and meta on top of the largest payload
DRAIN_BATCH = 1000  # messages taken per poll, so that a stop request is still seen promptly


class Source(abc.ABC):
    """Produces raw sensor messages until closed."""

    name: str
    #: True for sources that can wait (a recording read as fast as possible): a full task queue
    #: then blocks the source instead of dropping the oldest message
    can_wait: bool = False
    #: set when a finite source (a recording) has delivered everything
    finished: threading.Event

    @abc.abstractmethod
    def start(self, deliver: Deliver) -> None:
        """Begin delivering messages from a background thread."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop delivering; returns once no more messages will arrive."""

    def stats(self) -> dict[str, Any]:
        return {}


class MqttSource(Source):
    """Subscribes to sensor topics with QoS 1 in a persistent MQTT 5 session."""

    name = "mqtt"

    def __init__(self, config: MqttSourceConfig, device: str) -> None:
        self.config = config
        self.finished = threading.Event()
        self.client = make_client(config, config.client_id or f"{device}-in")
        self.subscription = topics.sensor_subscription(config.topic_prefix, config.share_group)
        self.connected = threading.Event()
        self.messages = 0

    def start(self, deliver: Deliver) -> None:
        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                log.error("mqtt source connection refused", reason=str(reason))
                return
            client.subscribe(self.subscription, qos=1)
            log.info("mqtt source connected", host=self.config.host, topic=self.subscription)
            self.connected.set()

        def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if self.connected.is_set():
                log.warning("mqtt source disconnected; reconnecting", reason=str(reason))
            else:
                report_connect_failure(client)
            self.connected.clear()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.messages += 1
            deliver(bytes(message.payload))

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_message = on_message
        # a stable client id and a session that outlives a disconnect: the broker keeps QoS 1 samples
        self.client.connect_async(self.config.host, self.config.port, paho_keepalive(self.config.keepalive_s),
                                  clean_start=False, properties=connect_properties(3600))
        self.client.loop_start()

    def close(self) -> None:
        stop_client(self.client)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected.is_set(), "messages": self.messages}


class ZmqSource(Source):
    """Receives on a ZeroMQ SUB or PULL socket; one frame, or [topic, bytes] from a PUB."""

    name = "zmq"

    def __init__(self, config: ZmqSourceConfig, context: zmq.Context[Any], max_payload: int) -> None:
        self.config = config
        self.context = context
        self.max_message = max_payload + ZMQ_OVERHEAD
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.authenticator: zmq.auth.thread.ThreadAuthenticator | None = None
        self.messages = 0
        self.socket = self._open()

    def _open(self) -> zmq.Socket[Any]:
        config = self.config
        socket = self.context.socket(zmq.SUB if config.socket == "sub" else zmq.PULL)
        socket.setsockopt(zmq.RCVHWM, config.receive_hwm)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        socket.setsockopt(zmq.LINGER, 0)
        interval_ms = int(config.heartbeat_s * 1000)
        socket.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, interval_ms * 3)
        if config.curve is not None:
            self._enable_curve(socket)
        if config.socket == "sub":
            socket.setsockopt(zmq.SUBSCRIBE, b"")
        if config.bind:
            socket.bind(config.endpoint)
        else:
            socket.connect(config.endpoint)
        return socket

    def _enable_curve(self, socket: zmq.Socket[Any]) -> None:
        curve = self.config.curve
        assert curve is not None  # checked by the caller
        allowed = {key.encode() for key in curve.allowed_clients}
        self.authenticator = zmq.auth.thread.ThreadAuthenticator(self.context)
        self.authenticator.start()
        self.authenticator.configure_curve_callback("*", credentials_provider=_Allowlist(allowed))
        socket.curve_server = True
        socket.curve_secretkey = curve.secret_key.read().get_secret_value().encode()
        socket.curve_publickey = curve.public_key.encode()

    def start(self, deliver: Deliver) -> None:
        self.thread = threading.Thread(target=self._receive, args=(deliver,), name="zmq-source", daemon=True)
        self.thread.start()

    def _receive(self, deliver: Deliver) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(100):
                continue
            for _ in range(DRAIN_BATCH):  # take what is queued without polling for each message
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.messages += 1
                deliver(frames[-1])

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(2)
        self.socket.close()
        if self.authenticator is not None:
            self.authenticator.stop()

    def stats(self) -> dict[str, Any]:
        return {"messages": self.messages}


class _Allowlist:
    """ZAP credentials provider: only listed CURVE client keys get in."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        """``key`` is the client's Z85-encoded public key (pyzmq encodes it before asking)."""
        permitted = key in self.allowed
        if not permitted:
            log.warning("zmq client key refused", key=key.decode(errors="replace"))
        return permitted


class RecordingSource(Source):
    """Reads an MCAP recording, with its original timing, faster, or as fast as possible."""

    name = "recording"

    def __init__(self, config: RecordingSourceConfig) -> None:
        self.config = config
        self.can_wait = config.speed is None
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.messages = 0

    def start(self, deliver: Deliver) -> None:
        from sensors.recording import RecordingReader
        from sensors.replay import replay

        def run() -> None:
            try:
                with RecordingReader(self.config.path) as reader:
                    if not reader.complete:
                        log.warning("recording was not closed properly; reading what is intact",
                                    path=str(self.config.path), damage=reader.damage)
                    self.messages = replay(reader, lambda topic, data: deliver(data), self.config.speed,
                                           self.stop)
            except Exception:
                log.exception("recording source failed", path=str(self.config.path))
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=run, name="recording-source", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)

    def stats(self) -> dict[str, Any]:
        return {"messages": self.messages, "finished": self.finished.is_set()}


class SimulatorSource(Source):
    """Simulated factory streams (vibration fleet, camera station) generated in process."""

    name = "simulator"

    def __init__(self, config: SimulatorSourceConfig) -> None:
        self.config = config
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, deliver: Deliver) -> None:
        from sensors.simulate.factory import factory_streams

        for name, stream in factory_streams(self.config, self.stop):
            thread = threading.Thread(target=self._pump, args=(stream, deliver), name=f"sim-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _pump(self, stream: Any, deliver: Deliver) -> None:
        for raw in stream:
            if self.stop.is_set():
                return
            deliver(raw)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(2)


def make_source(config: SourceConfig, device: str, context: zmq.Context[Any], max_payload: int) -> Source:
    """Build the source a config entry describes."""
    if isinstance(config, MqttSourceConfig):
        return MqttSource(config, device)
    if isinstance(config, ZmqSourceConfig):
        return ZmqSource(config, context, max_payload)
    if isinstance(config, RecordingSourceConfig):
        return RecordingSource(config)
    return SimulatorSource(config)

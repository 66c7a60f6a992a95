"""Sensor input from a ZeroMQ SUB or PULL socket, optionally CURVE-encrypted with an allow-list."""

from __future__ import annotations

import threading
from typing import Any, Literal

import structlog
import zmq
import zmq.auth.thread
from pydantic import Field

from sensors.settings import Secret, Strict
from sensors.sources import Deliver, Source, SourceEnv

log = structlog.get_logger(__name__)
ZMQ_OVERHEAD = 64 * 1024  # header, sensor id and meta on top of the largest payload
DRAIN_BATCH = 1000  # messages taken per poll, so that a stop request is still seen promptly


class Curve(Strict):
    """ZeroMQ CURVE encryption: this side's key pair and the client keys allowed in."""

    secret_key: Secret = Field(description="this socket's Z85 secret key")
    public_key: str = Field(description="this socket's Z85 public key")
    allowed_clients: list[str] = Field(default=[], description="Z85 public keys of allowed peers")


class ZmqSourceConfig(Strict):
    """Sensor input from a ZeroMQ SUB or PULL socket."""

    kind: Literal["zmq"]
    endpoint: str = Field(description="e.g. tcp://0.0.0.0:5556 or ipc:///run/edge-agent/in")
    socket: Literal["sub", "pull"] = Field(default="pull", description="socket type")
    bind: bool = Field(default=True, description="bind (sensors connect) or connect (to a publisher)")
    receive_hwm: int = Field(default=1000, ge=1, description="receive high-water mark (messages)")
    heartbeat_s: float = Field(default=5.0, gt=0, description="ZMTP heartbeat interval")
    curve: Curve | None = Field(default=None, description="CURVE server settings")


class ZmqSource(Source):
    """Receives on a ZeroMQ SUB or PULL socket; one frame, or [topic, bytes] from a PUB."""

    name = "zmq"
    config_type = ZmqSourceConfig

    def __init__(self, config: ZmqSourceConfig, env: SourceEnv) -> None:
        self.config = config
        self.context = env.zmq_context
        self.max_message = env.max_payload + ZMQ_OVERHEAD
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

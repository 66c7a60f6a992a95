"""Events on a ZeroMQ PUB socket as two frames: [topic, JSON]."""

from __future__ import annotations

import threading
from typing import Literal

import zmq
from pydantic import Field

from agent.sinks import Outgoing, Sink, SinkEnv
from sensors.settings import Strict
from sensors.topics import DEFAULT_PREFIX


class ZmqSinkConfig(Strict):
    """Events on a ZeroMQ PUB socket as two frames: [topic, JSON]."""

    kind: Literal["zmq"]
    endpoint: str = Field(description="e.g. tcp://0.0.0.0:5557")
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="first topic level of every topic frame")
    send_hwm: int = Field(default=10_000, ge=1, description="send high-water mark")


class ZmqSink(Sink):
    """Publishes [topic, JSON] on a ZeroMQ PUB socket; subscribers filter by topic prefix."""

    name = "zmq"
    config_type = ZmqSinkConfig

    def __init__(self, config: ZmqSinkConfig, env: SinkEnv) -> None:
        self.socket = (env.zmq_context or zmq.Context.instance()).socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, config.send_hwm)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.bind(config.endpoint)
        self.prefix = config.topic_prefix
        self._lock = threading.Lock()  # zmq sockets are not thread-safe; workers share this sink

    def send(self, item: Outgoing) -> None:
        with self._lock:
            self.socket.send_multipart([item.topic(self.prefix).encode(), item.payload])
            if item.attachment is not None:
                self.socket.send_multipart([item.attachment_topic(self.prefix).encode(), item.attachment])

    def close(self) -> None:
        self.socket.close()

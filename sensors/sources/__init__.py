"""Ingest sources: where raw wire bytes come from (MQTT, ZeroMQ, a recording; the agent adds its simulator).

A source hands raw wire bytes to ``deliver`` from its own thread; decoding and validation
happen in the agent's dispatcher, one place for every source.  A source that acknowledges
input to its sender (MQTT QoS 1) passes an ``ack`` callback with the bytes: the agent calls
it once the message produced its events into the outbox, or was rejected or dropped and counted.
Each source is one module that declares its class and its config model; :data:`SOURCES` lists them.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import zmq
from pydantic import BaseModel

from sensors.plugins import Registry

Ack = Callable[[], None]


class Deliver(Protocol):
    """What a source calls with each raw message (and, if it acknowledges input, the acknowledgement)."""

    def __call__(self, raw: bytes, ack: Ack | None = None) -> None: ...


@dataclass
class SourceEnv:
    """What every source may need from the agent that runs it."""

    device: str
    zmq_context: zmq.Context[Any]
    max_payload: int


class Source(abc.ABC):
    """Produces raw sensor messages until closed."""

    config_type: ClassVar[type[BaseModel]]
    name: str
    #: True for sources that can wait (a recording read as fast as possible): a full task queue
    #: then blocks the source instead of dropping the oldest message
    can_wait: bool = False
    #: True when other agents take part of the same streams (an MQTT shared subscription): a skipped
    #: sequence number is then another agent's message, not a gap
    shares_streams: bool = False
    #: set when a finite source (a recording) has delivered everything
    finished: threading.Event
    #: why a finite source stopped before its end (e.g. a recording damaged half-way), for the exit code
    error: str | None = None

    @classmethod  # noqa: B027 - an optional hook: most sources have nothing to check
    def check(cls, config: Any) -> None:
        """Preflight, before anything is opened: raise an EdgeAgentError for what would stop this source
        (a missing recording, ...). Connections are not tried here; files the config names are."""

    @abc.abstractmethod
    def start(self, deliver: Deliver) -> None:
        """Begin delivering messages from a background thread."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop delivering; returns once no more messages will arrive."""

    def stats(self) -> dict[str, Any]:
        return {}


SOURCES: Registry[Source] = Registry("source", {
    "mqtt": "sensors.sources.mqtt:MqttSource",
    "zmq": "sensors.sources.zmq:ZmqSource",
    "recording": "sensors.sources.recording:RecordingSource",
})


def make_source(config: Any, env: SourceEnv) -> Source:
    """Build the source a config entry describes."""
    cls: Any = SOURCES.get(config.kind)
    source: Source = cls(config, env)
    return source

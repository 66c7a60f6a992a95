"""Event sinks: where finished events go (MQTT through the durable outbox, ZeroMQ PUB, JSON Lines, console).

Each sink is one module that declares its class and its config model; :data:`SINKS` lists them.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import zmq
from pydantic import BaseModel

from agent.events import SEVERITY_RANK, EventDraft
from sensors import topics
from sensors.plugins import Registry


@dataclass
class SinkEnv:
    """What every sink may need from the agent that runs it."""

    device: str
    state_dir: Path
    #: the agent's shared context; sinks that need one and get none use ``zmq.Context.instance()``
    zmq_context: zmq.Context[Any] | None = None
    #: raises one of the agent's own events (e.g. ``storage_degraded``); never call it holding a sink's lock
    report: Callable[[EventDraft], None] = lambda draft: None


@dataclass(frozen=True)
class Outgoing:
    """One finished event, its JSON bytes, and an optional JPEG attachment."""

    event: dict[str, Any]
    payload: bytes
    attachment: bytes | None = None

    @property
    def severity(self) -> int:
        return SEVERITY_RANK[self.event["severity"]]

    def topic(self, prefix: str) -> str:
        event = self.event
        return topics.event_topic(prefix, event["device"], event["task"], event["type"])

    def attachment_topic(self, prefix: str) -> str:
        event = self.event
        return topics.image_topic(prefix, event["device"], event["task"], event["event_id"])


class Sink(abc.ABC):
    """Where events go; ``send`` must not block on the network."""

    config_type: ClassVar[type[BaseModel]]
    name: str

    @abc.abstractmethod
    def send(self, item: Outgoing) -> None:
        """Hand over one event (stored or queued; delivery may happen later)."""

    def send_status(self, status: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Publish the device status (only sinks with a status channel override this)."""

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what can be flushed and release resources."""


SINKS: Registry[Sink] = Registry("sink", {
    "mqtt": "agent.sinks.mqtt:MqttSink",
    "zmq": "agent.sinks.zmq:ZmqSink",
    "jsonl": "agent.sinks.jsonl:JsonlSink",
    "console": "agent.sinks.console:ConsoleSink",
})


def make_sink(config: Any, env: SinkEnv) -> Sink:
    """Build the sink a config entry describes."""
    cls: Any = SINKS.get(config.kind)
    sink: Sink = cls(config, env)
    return sink


SEVERITY_MARK = {"info": " ", "warning": "!", "alarm": "ALARM"}
#: ANSI colours of a line on a terminal, by severity
SEVERITY_COLOUR = {"info": "\033[2m", "warning": "\033[33m", "alarm": "\033[1;31m"}
#: body fields that repeat the event's own score (shown once, as ``score=``)
_SCORE_FIELDS = frozenset({"score", "part_score"})


def render_event(event: dict[str, Any], colour: bool = False) -> str:
    """One readable line for an event (the console sink and ``edge-agent tail``): time, severity, device,
    task/type, sensor, one score and the body's fields, numbers rounded, long values summarised whole
    (``[12 items]``), never cut in the middle."""
    body = event.get("body", {})
    details = " ".join(f"{key}={compact(value)}" for key, value in body.items() if key not in _SCORE_FIELDS)
    score = "" if event.get("score") is None else f" score={compact(event['score'])}"
    device = f"{event['device']} " if event.get("device") else ""
    line = (f"{event['source_time'][11:23]} {SEVERITY_MARK[event['severity']]:>5} {device}{event['task']}/"
            f"{event['type']} {event['sensor']}{score} {details}").rstrip()
    return f"{SEVERITY_COLOUR[event['severity']]}{line}\033[0m" if colour else line


def compact(value: Any, budget: int = 48) -> str:
    """A value in a few characters: floats to 3 significant digits, and a list or mapping that would not fit
    in ``budget`` characters as its size (``[12 items]``, ``{5 fields}``) instead of a cut-off text; a string,
    one value meant to be read (a page's summary line), gets twice the budget."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, str)):
        text = str(value)
        return text if len(text) <= (2 * budget if isinstance(value, str) else budget) else f"<{len(text)} characters>"
    if isinstance(value, (list, tuple)):
        text = "[" + ",".join(compact(item, budget) for item in value) + "]"
        return text if len(text) <= budget else f"[{len(value)} items]"
    if isinstance(value, dict):
        text = "{" + ",".join(f"{key}:{compact(item, budget)}" for key, item in value.items()) + "}"
        return text if len(text) <= budget else f"{{{len(value)} fields}}"
    return compact(str(value), budget)

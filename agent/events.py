"""The event schema: what the agent publishes, built from the drafts that tasks return."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_ID = "edge-agent/event/1"
Severity = Literal["info", "warning", "alarm"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "alarm": 2}


class EventBody(BaseModel):
    """The typed body of one event type; the JSON Schema and the event tables in docs/events.md are
    generated from these models (``python -m agent.schema``).

    A subclass names its event ``type`` and the ``severity`` it is published with (text, for the docs);
    its docstring is the event's description in the docs, and each field's description the field's.
    """

    model_config = ConfigDict(extra="forbid")
    type: ClassVar[str]
    severity: ClassVar[str]

    def draft(self, sensor: str, source_time_ns: int, severity: Severity, score: float | None = None,
              model: ModelRef | None = None, attachment: bytes | None = None) -> EventDraft:
        """This body as an event draft (the JSON form: ``None`` fields kept, as the schema requires)."""
        return EventDraft(self.type, sensor, source_time_ns, severity, score, model,
                          self.model_dump(mode="json"), attachment)


@dataclass(frozen=True)
class ModelRef:
    """The model that produced an event."""

    name: str
    version: str


@dataclass
class EventDraft:
    """What a task found; the agent adds id, device, task and detection time.

    ``attachment`` is an optional JPEG (e.g. a defect crop) published on the task's
    image topic with the event id, not inside the JSON event.
    """

    type: str
    sensor: str
    source_time_ns: int
    severity: Severity = "info"
    score: float | None = None
    model: ModelRef | None = None
    body: dict[str, Any] = field(default_factory=dict)
    attachment: bytes | None = None


def iso_time(time_ns: int) -> str:
    """RFC 3339 UTC time with microseconds, e.g. 2026-11-29T08:00:00.123456Z."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos // 1000:06d}Z"


def finalize(draft: EventDraft, device: str, task: str, now_ns: int | None = None) -> dict[str, Any]:
    """Turn a draft into a schema-valid event dict with a fresh unique event id."""
    return {
        "schema": SCHEMA_ID,
        "event_id": uuid.uuid4().hex,
        "device": device,
        "sensor": draft.sensor,
        "task": task,
        "type": draft.type,
        "severity": draft.severity,
        "source_time": iso_time(draft.source_time_ns),
        "detection_time": iso_time(now_ns if now_ns is not None else time.time_ns()),
        "model": {"name": draft.model.name, "version": draft.model.version} if draft.model else None,
        "score": None if draft.score is None else float(draft.score),
        "body": draft.body,
    }


def dumps(event: dict[str, Any]) -> bytes:
    """Serialise an event as compact UTF-8 JSON (the bytes published on the wire)."""
    return json.dumps(event, separators=(",", ":"), allow_nan=False).encode()


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema that every emitted event validates against (agent/schema/event.schema.json)."""
    text = resources.files("agent").joinpath("schema/event.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


class InputRejected(EventBody):
    """Input that could not be used, on ``{prefix}/{device}/errors``. Reports are rate-limited to one per sensor
    per 5 s; every rejection is counted in the stats."""

    type = "input_rejected"
    severity = "warning"
    reason: str = Field(description="what was wrong, e.g. 'crc32 mismatch: the message was corrupted'")
    suppressed_since_last: int = Field(description="rejections of the same sensor not reported separately")
    seq: int | None = Field(default=None, description="the rejected message's sequence number (for a window, "
                            "of its last message); null if unknown. The event's source_time is the rejected "
                            "data's time (a window's start), or the agent's clock if the message had none")
    window: int | None = Field(default=None, description="the rejected window's index in the sensor's stream "
                               "(counted from the stream's start or last break); null for a message or frame")


class ClockJump(EventBody):
    """The sensor's timestamp went back by more than 1 s; the message is kept (sequence numbers give the order).
    On ``{prefix}/{device}/errors``."""

    type = "clock_jump"
    severity = "warning"
    reason: str = Field(description="how far the timestamp went back")
    suppressed_since_last: int = Field(description="jumps of the same sensor not reported separately")


class SensorOffline(EventBody):
    """A sensor has been silent for ``sensor_timeout_s``."""

    type = "sensor_offline"
    severity = "warning"
    silent_for_s: float = Field(description="seconds since the sensor's last message")


class SensorOnline(EventBody):
    """A sensor that was offline is sending again."""

    type = "sensor_online"
    severity = "info"


class SensorQuarantined(EventBody):
    """A sensor's input kept making a task fail: each such input was rejected, and now all of the sensor's
    input is ignored (and counted) for ``hold_s`` or until a config reload. The agent keeps running."""

    type = "sensor_quarantined"
    severity = "warning"
    failures: int = Field(description="task failures on the sensor's input that led to the quarantine")
    within_s: float = Field(description="... within this many seconds")
    hold_s: float = Field(description="how long the sensor's input is ignored")
    reason: str = Field(description="the last failure, e.g. 'OverflowError: cannot convert float infinity'")


class StorageDegraded(EventBody):
    """The outbox cannot write to disk (full or failing): events are kept in memory and still published while the
    broker is reachable; at a stop, what is only in memory is written to the log as JSON. ``sensor`` is empty."""

    type = "storage_degraded"
    severity = "warning"
    error: str = Field(description="the storage error, e.g. 'database or disk is full'")
    in_memory: int = Field(description="events held only in memory when this was raised")


class StorageRecovered(EventBody):
    """The outbox can write to disk again; events held in memory are being stored. ``sensor`` is empty."""

    type = "storage_recovered"
    severity = "info"
    degraded_for_s: float = Field(description="seconds the storage was degraded")


#: the agent's own events (``task: agent``)
AGENT_EVENTS: tuple[type[EventBody], ...] = (InputRejected, ClockJump, SensorOffline, SensorOnline,
                                             SensorQuarantined, StorageDegraded, StorageRecovered)

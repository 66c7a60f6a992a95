"""Watching the agent's alert topics as an operator would: duplicates dropped by event id, filters, summaries."""

from __future__ import annotations

import collections
import fnmatch
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt
import structlog

from agent.config import MqttConnection
from agent.events import SEVERITY_RANK
from agent.sinks import compact, render_event
from sensors import topics
from sensors.mqtt import failover, make_client, paho_keepalive, stop_client

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
        failover(client).connected()
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
        failover(self.client).connect(self.client, paho_keepalive(self.connection.keepalive_s))
        self.client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        stop_client(self.client)


@dataclass
class TailFilter:
    """What an operator asked to see: a lowest severity and fnmatch patterns (empty = all) per field."""

    min_severity: str = "info"
    tasks: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    sensors: list[str] = field(default_factory=list)

    def accepts(self, event: dict[str, Any]) -> bool:
        return (SEVERITY_RANK.get(event.get("severity", "info"), 0) >= SEVERITY_RANK[self.min_severity]
                and _matches(event.get("task", ""), self.tasks) and _matches(event.get("type", ""), self.types)
                and _matches(event.get("sensor", ""), self.sensors))


def _matches(value: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


class OperatorConsole:
    """``edge-agent tail``'s screen: one line per event that matters, routine events (info severity, e.g.
    accepted parts and health) summarised once per interval unless asked for by type or with ``every``,
    the agent's status as one short line. Called from the MQTT thread and from a timer: locked."""

    def __init__(self, selection: TailFilter, summary_s: float, every: bool = False, colour: bool = False,
                 out: TextIO | None = None) -> None:
        self.selection = selection
        self.summary_s = summary_s
        self.every = every
        self.colour = colour
        self.out = out or sys.stdout
        self.routine: collections.Counter[str] = collections.Counter()
        self.last_summary = time.monotonic()
        self._lock = threading.Lock()

    def show(self, topic: str, message: dict[str, Any]) -> bool:
        """Print (or count as routine) one message; returns whether it passed the filters."""
        if "event_id" not in message:
            if not topic.endswith("/status"):
                return False
            self._print(status_line(message))
            return True
        if not self.selection.accepts(message):
            return False
        if message.get("severity") == "info" and not self.every and not self.selection.types:
            with self._lock:
                self.routine[f"{message.get('task')}/{message.get('type')}"] += 1
            return True
        self._print(render_event(message, self.colour))
        return True

    def tick(self, now: float) -> None:
        """Print the routine summary once ``summary_s`` passed since the last one (nothing if none came)."""
        with self._lock:
            if now - self.last_summary < self.summary_s:
                return
            counts, self.routine = self.routine, collections.Counter()
            self.last_summary = now
        if counts:
            parts = ", ".join(f"{name} {count}" for name, count in counts.most_common())
            self._print(f"      routine: {sum(counts.values())} info events in the last {self.summary_s:.0f} s "
                        f"({parts})")

    def _print(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)


def status_line(status: dict[str, Any]) -> str:
    """The agent's retained status in one short line: state, uptime, work done, trouble, outbox, the broker
    after a failover, the agents it stands in for."""
    head = f"      status {status.get('device', '?')}: {status.get('state', '?')}"
    stats = status.get("stats")
    if not isinstance(stats, dict):
        reason = status.get("reason") or status.get("time")
        return f"{head} ({reason})" if reason else head
    totals = stats.get("sensor_totals", {})
    tasks = stats.get("tasks", {})
    work = ", ".join(f"{name} {task.get('processed', 0)} in/{task.get('events', 0)} events"
                     for name, task in tasks.items())
    trouble = [f"{key} {totals[key]}" for key in ("rejected", "gaps", "dropped", "offline", "quarantined")
               if totals.get(key)]
    pending = sum(sink.get("pending", 0) for sink in stats.get("sinks", {}).values() if isinstance(sink, dict))
    # after a failover the operator should know which broker the events go through
    moved = [f"{name} on {sink.get('broker')} after {sink['failovers']} failover(s)"
             for name, sink in stats.get("sinks", {}).items() if isinstance(sink, dict) and sink.get("failovers")]
    standby = stats.get("standby")
    standing_in = standby.get("standing_in_for") if isinstance(standby, dict) else None
    parts = [f"up {compact(float(stats.get('uptime_s', 0)))} s", f"{totals.get('tracked', 0)} sensors", work,
             "; ".join(trouble), f"outbox {pending} pending" if pending else "", "; ".join(moved),
             f"standing in for {', '.join(map(str, standing_in))}" if isinstance(standing_in, list) and standing_in
             else ""]
    return head + " | " + " | ".join(part for part in parts if part)

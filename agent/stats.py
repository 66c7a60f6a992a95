"""Counters the agent reports: per-sensor traffic, rejections, gaps and drops; per-task latency."""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

LATENCY_SAMPLES = 2048
#: upper bounds (s) of the latency histogram buckets the metrics endpoint exports; +Inf is implied
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_MAX_SENSORS = 1000
STATUS_TOP_SENSORS = 20  # sensors listed by name in the status message; the rest are in the totals
MAX_REASONS = 8  # distinct reason texts kept per sensor; more are counted under "other reasons"
MAX_REASON_CHARS = 200
K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(collections.OrderedDict[K, V], Generic[K, V]):
    """A map of at most ``limit`` keys: :meth:`touch` makes a key the most recent, and the least recent
    ones are evicted (counted in ``evicted``, and handed to ``on_evict``) so that junk ids cannot grow it."""

    def __init__(self, limit: int, factory: Callable[[], V],
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.factory = factory
        self.on_evict = on_evict
        self.evicted = 0

    def touch(self, key: K) -> V:
        """The key's value (created if new), now the most recently seen."""
        value = self.get(key)
        if value is None:
            value = self[key] = self.factory()
            self.shrink()
        else:
            self.move_to_end(key)
        return value

    def shrink(self) -> None:
        """Evict the least recently seen keys beyond the limit."""
        while len(self) > self.limit:
            key, value = self.popitem(last=False)
            self.evicted += 1
            if self.on_evict is not None:
                self.on_evict(key, value)


@dataclass
class SensorStats:
    """What one sensor sent and what became of it."""

    received: int = 0
    rejected: int = 0
    gaps: int = 0
    missing: int = 0
    dropped: int = 0
    clock_jumps: int = 0
    last_seq: int | None = None
    last_timestamp_ns: int | None = None
    last_seen: float = 0.0
    first_valid: float | None = None  # when it first delivered a valid message
    online: bool = True
    healthy: bool = False  # delivered valid data for a while: worth a sensor_offline event when silent
    quarantined: int = 0  # messages ignored while the sensor was quarantined
    reported_received: int = 0  # ``received`` at the last status report, for its rate and activity
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class TaskStats:
    """What one task did."""

    processed: int = 0
    events: int = 0
    errors: int = 0
    rejected: int = 0
    restarts: int = 0
    latencies_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_SAMPLES))
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum_s: float = 0.0

    def observe(self, latency_s: float) -> None:
        """One item's time from its arrival at the worker to its events (hold the stats lock)."""
        self.latencies_s.append(latency_s)
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        self.latency_sum_s += latency_s


class Stats:
    """Thread-safe counters shared by sources, workers and the reporter."""

    def __init__(self, max_sensors: int = DEFAULT_MAX_SENSORS) -> None:
        self.lock = threading.Lock()
        self.sensors: BoundedMap[str, SensorStats] = BoundedMap(max_sensors, SensorStats)
        self.tasks: dict[str, TaskStats] = collections.defaultdict(TaskStats)
        self.undecodable = 0
        self.undecodable_reasons: collections.Counter[str] = collections.Counter()
        #: bugs of ours met while decoding: never counted as rejected input, always logged with a traceback
        self.internal_errors = 0
        self.started = time.monotonic()
        self.last_snapshot = self.started

    def sensor(self, name: str) -> SensorStats:
        """The sensor's entry, created if new and made the most recently seen; hold ``lock``."""
        return self.sensors.touch(name)

    def reject(self, sensor: str | None, reason: str) -> None:
        """Count a rejection; messages that could not even name their sensor are counted apart."""
        with self.lock:
            if sensor is None:
                self.undecodable += 1
                _count_reason(self.undecodable_reasons, _reason_key(reason))
            else:
                entry = self.sensor(sensor)
                entry.rejected += 1
                _count_reason(entry.reasons, reason[:MAX_REASON_CHARS])

    def snapshot(self, top: int = STATUS_TOP_SENSORS, mark: bool = False) -> dict[str, Any]:
        """A JSON-able view for the log and the status topic, of bounded size: the ``top`` sensors by
        activity (messages since the last marked snapshot, then in all) by name, every sensor in the totals.
        ``mark`` starts the next interval for rates (the periodic report does)."""
        with self.lock:
            now = time.monotonic()
            elapsed = max(1e-3, now - self.last_snapshot)
            busiest = sorted(self.sensors.items(), key=lambda item: (
                item[1].received - item[1].reported_received, item[1].received), reverse=True)[:top]
            sensors = {name: _sensor_view(s, elapsed) for name, s in busiest}
            totals = {key: sum(getattr(s, key) for s in self.sensors.values())
                      for key in ("received", "rejected", "gaps", "missing", "dropped", "clock_jumps", "quarantined")}
            totals.update(tracked=len(self.sensors), evicted=self.sensors.evicted,
                          offline=sum(not s.online for s in self.sensors.values()))
            if mark:
                self.last_snapshot = now
                for entry in self.sensors.values():
                    entry.reported_received = entry.received
            tasks = {name: {"processed": t.processed, "events": t.events, "errors": t.errors,
                            "rejected": t.rejected, "restarts": t.restarts, **_percentiles(t.latencies_s)}
                     for name, t in self.tasks.items()}
            return {"uptime_s": round(now - self.started, 1), "sensors": sensors, "sensor_totals": totals,
                    "tasks": tasks, "undecodable": self.undecodable,
                    "internal_errors": self.internal_errors}


def _sensor_view(s: SensorStats, elapsed_s: float) -> dict[str, Any]:
    return {"received": s.received, "rejected": s.rejected, "gaps": s.gaps, "missing": s.missing,
            "dropped": s.dropped, "clock_jumps": s.clock_jumps, "online": s.online, "quarantined": s.quarantined,
            "rate_per_s": round((s.received - s.reported_received) / elapsed_s, 2),
            **({"reasons": dict(s.reasons.most_common(5))} if s.reasons else {})}


def _count_reason(reasons: collections.Counter[str], reason: str) -> None:
    # the full text says what was wrong; a sensor whose texts keep changing shares one "other" bucket
    if reason in reasons or len(reasons) < MAX_REASONS:
        reasons[reason] += 1
    else:
        reasons["other reasons"] += 1


def _reason_key(reason: str) -> str:
    # group by the reason's stable start ("bad magic", "crc32 mismatch") rather than its numbers
    return reason.split(":")[0][:48]


def _percentiles(latencies: collections.deque[float]) -> dict[str, float]:
    if not latencies:
        return {}
    p50, p99 = np.percentile(np.fromiter(latencies, float), [50, 99])
    return {"latency_p50_ms": round(float(p50) * 1e3, 3), "latency_p99_ms": round(float(p99) * 1e3, 3)}

"""Counters the agent reports: per-sensor traffic, rejections, gaps and drops; per-task latency."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATENCY_SAMPLES = 2048


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
    online: bool = True
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


class Stats:
    """Thread-safe counters shared by sources, workers and the reporter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sensors: dict[str, SensorStats] = collections.defaultdict(SensorStats)
        self.tasks: dict[str, TaskStats] = collections.defaultdict(TaskStats)
        self.undecodable = 0
        self.undecodable_reasons: collections.Counter[str] = collections.Counter()
        self.started = time.monotonic()

    def reject(self, sensor: str | None, reason: str) -> None:
        """Count a rejection; messages that could not even name their sensor are counted apart."""
        with self.lock:
            if sensor is None:
                self.undecodable += 1
                self.undecodable_reasons[_reason_key(reason)] += 1
            else:
                entry = self.sensors[sensor]
                entry.rejected += 1
                entry.reasons[_reason_key(reason)] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for the log and the status topic."""
        with self.lock:
            sensors = {
                name: {"received": s.received, "rejected": s.rejected, "gaps": s.gaps, "missing": s.missing,
                       "dropped": s.dropped, "clock_jumps": s.clock_jumps, "online": s.online,
                       **({"reasons": dict(s.reasons.most_common(5))} if s.reasons else {})}
                for name, s in self.sensors.items()
            }
            tasks = {name: {"processed": t.processed, "events": t.events, "errors": t.errors,
                            "rejected": t.rejected, "restarts": t.restarts, **_percentiles(t.latencies_s)}
                     for name, t in self.tasks.items()}
            return {"uptime_s": round(time.monotonic() - self.started, 1), "sensors": sensors, "tasks": tasks,
                    "undecodable": self.undecodable}


def _reason_key(reason: str) -> str:
    # group by the reason's stable start ("bad magic", "crc32 mismatch") rather than its numbers
    return reason.split(":")[0][:48]


def _percentiles(latencies: collections.deque[float]) -> dict[str, float]:
    if not latencies:
        return {}
    p50, p99 = np.percentile(np.fromiter(latencies, float), [50, 99])
    return {"latency_p50_ms": round(float(p50) * 1e3, 3), "latency_p99_ms": round(float(p99) * 1e3, 3)}

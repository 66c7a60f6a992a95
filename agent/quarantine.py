"""Sensor quarantine: a sensor whose input keeps making a task fail is ignored for a while.

A task that raises on one sensor's input (not a clean ``RejectedInput``: a bug, an overflow) has the
input rejected and counted; after ``failures`` such failures within ``within_s`` the sensor is
quarantined for ``hold_s``: its messages are dropped (counted) before they reach a task, and a
``sensor_quarantined`` event says so.  A config reload lifts every quarantine.  None of this counts
towards the worker crash loop that makes the agent exit: a bad sensor never restarts the agent.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import structlog
from pydantic import Field

from agent.events import EventDraft, SensorQuarantined
from agent.stats import DEFAULT_MAX_SENSORS, BoundedMap
from sensors.settings import Strict

log = structlog.get_logger(__name__)


class QuarantineConfig(Strict):
    """When a failing sensor is quarantined, and for how long."""

    failures: int = Field(default=3, ge=1, description="task failures on one sensor's input that quarantine it")
    within_s: float = Field(default=60, gt=0, description="... when they happen within this many seconds")
    hold_s: float = Field(default=600, gt=0, description="how long a quarantined sensor's input is ignored "
                          "(a config reload lifts it earlier)")


class Quarantine:
    """Failure counts and quarantines per sensor, both bounded to ``max_sensors`` sensors; thread-safe."""

    def __init__(self, emit: Callable[[str, EventDraft], None], config: QuarantineConfig | None = None,
                 max_sensors: int = DEFAULT_MAX_SENSORS) -> None:
        self.emit = emit
        self.config = config or QuarantineConfig()
        self.lock = threading.Lock()
        self.failures: BoundedMap[str, collections.deque[float]] = BoundedMap(max_sensors, collections.deque)
        self.until: BoundedMap[str, float] = BoundedMap(max_sensors, float)

    def blocked(self, sensor: str) -> bool:
        """True while the sensor is quarantined."""
        if not self.until:  # the common case, without the lock
            return False
        with self.lock:
            until = self.until.get(sensor)
            if until is None:
                return False
            if time.monotonic() < until:
                return True
            del self.until[sensor]
        log.info("sensor quarantine over", sensor=sensor)
        return False

    def failed(self, sensor: str, reason: str, source_time_ns: int) -> bool:
        """Count one failure on the sensor's input; True if it put the sensor in quarantine."""
        now = time.monotonic()
        with self.lock:
            times = self.failures.touch(sensor)
            times.append(now)
            while times and now - times[0] > self.config.within_s:
                times.popleft()
            if len(times) < self.config.failures:
                return False
            count = len(times)
            del self.failures[sensor]
            self.until[sensor] = now + self.config.hold_s
            self.until.shrink()
        log.error("sensor quarantined: its input keeps making a task fail", sensor=sensor, failures=count,
                  hold_s=self.config.hold_s, reason=reason)
        body = SensorQuarantined(failures=count, within_s=self.config.within_s, hold_s=self.config.hold_s,
                                 reason=reason)
        self.emit("agent", body.draft(sensor, source_time_ns, "warning"))
        return True

    def lift_all(self) -> None:
        """Forget every quarantine and failure count (a config reload: the operator may have fixed things)."""
        with self.lock:
            lifted = list(self.until)
            self.until.clear()
            self.failures.clear()
        if lifted:
            log.info("sensor quarantines lifted by reload", sensors=lifted[:20], count=len(lifted))

    def quarantined(self) -> list[str]:
        """The sensors quarantined now."""
        now = time.monotonic()
        with self.lock:
            return [sensor for sensor, until in self.until.items() if until > now]

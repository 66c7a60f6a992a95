"""The replay regression check: compare the events an agent produced on a recording with expected ones.

Events (agent/schema/event.schema.json) are matched by ``(sensor, task, type)`` and
``source_time`` within a tolerance; a matched pair must then agree on ``severity`` and,
within a relative tolerance, on ``score``. ``event_id``, ``detection_time``, ``device``,
``model`` and ``body`` are not compared. Within one ``(sensor, task, type)`` the pairing
is an optimal assignment (as many pairs as the time tolerance allows, preferring pairs
that agree and are close), so the order of events in the files does not matter.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from sensors.errors import EdgeAgentError

REQUIRED = ("sensor", "task", "type", "source_time", "severity", "score")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class EventsError(EdgeAgentError):
    """An events file that cannot be read, or an event that lacks what the comparison needs."""


@dataclass(frozen=True)
class Tolerances:
    """How close an actual event must be to an expected one."""

    time_s: float = 2.0  # source_time difference
    score_relative: float = 0.1  # |actual - expected| <= score_relative * |expected| ...
    score_absolute: float = 1e-6  # ... or <= this, for scores near zero
    ignore_types: frozenset[str] = frozenset({"health"})  # periodic, wall-clock driven


@dataclass(frozen=True)
class Event:
    """The compared fields of one event, and where it was in its list (1-based)."""

    sensor: str
    task: str
    type: str
    source_ns: int
    severity: str
    score: float | None
    index: int

    @property
    def key(self) -> tuple[str, str, str]:
        return self.sensor, self.task, self.type

    def describe(self) -> str:
        score = "-" if self.score is None else f"{self.score:.4g}"
        return (f"{_iso(self.source_ns)}  {self.sensor or '(device)'}  {self.task}/{self.type}  "
                f"{self.severity}  score {score}")


@dataclass(frozen=True)
class Mismatch:
    """A pair matched by key and time that disagrees on severity or score."""

    expected: Event
    actual: Event
    problems: list[str]


@dataclass
class Report:
    """The outcome: ``ok`` when every expected event was produced, as expected, and nothing else."""

    tolerances: Tolerances
    expected_count: int = 0
    actual_count: int = 0
    ignored: int = 0
    matched: list[tuple[Event, Event]] = field(default_factory=list)  # (expected, actual), agreeing
    mismatched: list[Mismatch] = field(default_factory=list)
    missing: list[Event] = field(default_factory=list)
    unexpected: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unexpected)

    def render(self) -> str:
        """A readable summary, then every missing, unexpected and mismatched event."""
        t = self.tolerances
        lines = [
            f"replay check {'OK' if self.ok else 'FAILED'}: {self.expected_count} expected, "
            f"{self.actual_count} actual events; {len(self.matched)} matched, {len(self.mismatched)} "
            f"mismatched, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
            + (f" ({self.ignored} ignored: {', '.join(sorted(t.ignore_types))})" if self.ignored else ""),
            f"tolerances: source_time within {t.time_s:g} s, score within {t.score_relative:.0%} "
            f"(or {t.score_absolute:g}), severity equal",
        ]
        if self.missing:
            lines += ["", "missing (expected, not produced):"]
            lines += [f"  {e.describe()}  [expected #{e.index}]" for e in _by_time(self.missing)]
        if self.unexpected:
            lines += ["", "unexpected (produced, not expected):"]
            lines += [f"  {e.describe()}  [actual #{e.index}]" for e in _by_time(self.unexpected)]
        if self.mismatched:
            lines += ["", "mismatched (same sensor, task, type and time, different outcome):"]
            for item in sorted(self.mismatched, key=lambda m: m.expected.source_ns):
                shift = (item.actual.source_ns - item.expected.source_ns) / 1e9
                lines.append(f"  {item.expected.describe()}  [expected #{item.expected.index}, "
                             f"actual #{item.actual.index}, {shift:+.3f} s]")
                lines += [f"      {problem}" for problem in item.problems]
        return "\n".join(lines)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Events from a JSON Lines file (one event object per line; blank lines are skipped)."""
    events = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EventsError(f"{path}: no such file; give the events.jsonl the agent wrote") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EventsError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as error:
            raise EventsError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(event, dict):
            raise EventsError(f"{path}:{number}: expected a JSON object, got {type(event).__name__}")
        events.append(event)
    return events


def compare(actual: Iterable[Mapping[str, Any]], expected: Iterable[Mapping[str, Any]],
            tolerances: Tolerances | None = None) -> Report:
    """Match actual events to expected ones; see the module docstring for the rules."""
    tolerances = tolerances or Tolerances()
    report = Report(tolerances)
    groups: dict[tuple[str, str, str], tuple[list[Event], list[Event]]] = defaultdict(lambda: ([], []))
    for side, events in enumerate((expected, actual)):
        for index, raw in enumerate(events, 1):
            event = _event(raw, index, "expected" if side == 0 else "actual")
            if event.type in tolerances.ignore_types:
                report.ignored += 1
                continue
            groups[event.key][side].append(event)
    for wanted, got in groups.values():
        report.expected_count += len(wanted)
        report.actual_count += len(got)
        for component_wanted, component_got in _components(wanted, got, tolerances.time_s):
            _match(component_wanted, component_got, tolerances, report)
    return report


def _event(raw: Mapping[str, Any], index: int, side: str) -> Event:
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        raise EventsError(f"{side} event #{index} lacks {', '.join(missing)}")
    score = raw["score"]
    if score is not None and not isinstance(score, (int, float)):
        raise EventsError(f"{side} event #{index}: score must be a number or null, got {score!r}")
    try:
        source_ns = _parse_time(raw["source_time"])
    except (TypeError, ValueError):
        raise EventsError(f"{side} event #{index}: source_time {raw['source_time']!r} is not RFC 3339") from None
    return Event(str(raw["sensor"]), str(raw["task"]), str(raw["type"]), source_ns, str(raw["severity"]),
                 None if score is None else float(score), index)


def _parse_time(text: str) -> int:
    """RFC 3339 to Unix nanoseconds (microsecond precision, as the agent writes it)."""
    stamp = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if stamp.tzinfo is None:
        raise ValueError("no time zone")
    return (stamp - EPOCH) // timedelta(microseconds=1) * 1000


def _iso(time_ns: int) -> str:
    return (EPOCH + timedelta(microseconds=time_ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _by_time(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.source_ns, e.key))


def _components(wanted: list[Event], got: list[Event],
                time_s: float) -> Iterable[tuple[list[Event], list[Event]]]:
    """Split by gaps wider than the tolerance: no pair can cross one, and assignments stay small."""
    merged = sorted([(e.source_ns, 0, e) for e in wanted] + [(e.source_ns, 1, e) for e in got],
                    key=lambda item: (item[0], item[1]))
    component: tuple[list[Event], list[Event]] = ([], [])
    last: int | None = None
    for time_ns, side, event in merged:
        if last is not None and time_ns - last > time_s * 1e9:
            yield component
            component = ([], [])
        component[side].append(event)
        last = time_ns
    if merged:
        yield component


def _problems(expected: Event, actual: Event, tolerances: Tolerances) -> list[str]:
    problems = []
    if actual.severity != expected.severity:
        problems.append(f"severity: {actual.severity}, expected {expected.severity}")
    if (actual.score is None) != (expected.score is None):
        problems.append(f"score: {actual.score}, expected {expected.score}")
    elif actual.score is not None and expected.score is not None:
        allowed = max(tolerances.score_absolute, tolerances.score_relative * abs(expected.score))
        if abs(actual.score - expected.score) > allowed:
            relative = (f" ({(actual.score - expected.score) / abs(expected.score):+.1%})"
                        if expected.score else "")
            problems.append(f"score: {actual.score:.4g}, expected {expected.score:.4g}{relative}, "
                            f"tolerance {tolerances.score_relative:.0%}")
    return problems


def _match(wanted: list[Event], got: list[Event], tolerances: Tolerances, report: Report) -> None:
    """Optimal pairing within one component: most pairs first, then agreeing, then closest pairs."""
    if not wanted or not got:
        report.missing += wanted
        report.unexpected += got
        return
    limit_ns = tolerances.time_s * 1e9
    shift = np.abs(np.subtract.outer([e.source_ns for e in wanted], [a.source_ns for a in got])).astype(float)
    disagree = np.zeros(shift.shape, dtype=bool)
    for i, j in zip(*np.nonzero(shift <= limit_ns), strict=True):  # only pairs close enough in time
        disagree[i, j] = bool(_problems(wanted[i], got[j], tolerances))
    forbidden = 3.0 * min(len(wanted), len(got)) + 10  # more than any set of allowed pairs costs
    cost = np.where(shift <= limit_ns, shift / max(limit_ns, 1.0) + 2.0 * disagree, forbidden)
    rows, cols = linear_sum_assignment(cost)
    paired_rows, paired_cols = set(), set()
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if shift[i, j] > limit_ns:
            continue
        paired_rows.add(i)
        paired_cols.add(j)
        problems = _problems(wanted[i], got[j], tolerances)
        if problems:
            report.mismatched.append(Mismatch(wanted[i], got[j], problems))
        else:
            report.matched.append((wanted[i], got[j]))
    report.missing += [e for i, e in enumerate(wanted) if i not in paired_rows]
    report.unexpected += [e for j, e in enumerate(got) if j not in paired_cols]

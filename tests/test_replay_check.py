"""Tests for the replay regression check (agent/replay_check.py)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import EventDraft, ModelRef, finalize, schema
from agent.replay_check import EventsError, Tolerances, compare, read_events

T0 = 1_795_939_200_000_000_000
SECOND = 1_000_000_000
ANOMALY_BODY: dict[str, Any] = {
    "level": "low", "threshold": 0.5, "health": 40.0, "top_features": [{"feature": "ch0.rms", "z": 5.0}],
    "likely_fault": None, "fault_evidence_z": {}, "shaft_hz": 30.0, "fault_frequencies_hz": {}}


def event(sensor: str = "pump-1", task: str = "vibration", type_: str = "anomaly_raised", at_s: float = 10.0,
          severity: Any = "warning", score: float | None = 0.8, **body: Any) -> dict[str, Any]:
    """A schema-valid event as the agent publishes it (fresh event id and detection time)."""
    if task == "vibration" and type_.startswith("anomaly_") and not body:
        body = dict(ANOMALY_BODY, score=score)
    draft = EventDraft(type_, sensor, T0 + round(at_s * SECOND), severity, score, ModelRef("m", "1"), body)
    return finalize(draft, "edge-1", task)


class TestMatching:
    """Events match by (sensor, task, type) and source time; then severity and score must agree."""

    def test_identical(self) -> None:
        """The same events, with other event ids and detection times, in another order, pass."""
        expected = [event(at_s=t, sensor=s) for t in (1, 5, 9) for s in ("pump-1", "pump-2")]
        actual = [event(at_s=t, sensor=s) for t in (9, 5, 1) for s in ("pump-2", "pump-1")]
        report = compare(actual, expected)
        assert report.ok and len(report.matched) == 6
        assert report.render().startswith("replay check OK: 6 expected, 6 actual events; 6 matched")

    def test_events_are_schema_valid(self) -> None:
        """The events these tests compare are the agent's real event format."""
        jsonschema.validate(event(), schema())

    def test_time_within_tolerance(self) -> None:
        """A source_time off by less than the tolerance still matches."""
        assert compare([event(at_s=11.9)], [event(at_s=10.0)], Tolerances(time_s=2.0)).ok

    def test_time_beyond_tolerance(self) -> None:
        """Off by more than the tolerance: one missing and one unexpected event."""
        report = compare([event(at_s=12.5)], [event(at_s=10.0)], Tolerances(time_s=2.0))
        assert not report.ok and len(report.missing) == 1 and len(report.unexpected) == 1

    @pytest.mark.parametrize("field", ["sensor", "task", "type_"])
    def test_key_fields(self, field: str) -> None:
        """A different sensor, task or type is a different event."""
        other: dict[str, Any] = {field: "other_value"}
        report = compare([event(**other)], [event()])
        assert (len(report.missing), len(report.unexpected), len(report.matched)) == (1, 1, 0)

    def test_score_within_relative_tolerance(self) -> None:
        """A score within 10% of the expected one agrees."""
        assert compare([event(score=0.87)], [event(score=0.8)], Tolerances(score_relative=0.1)).ok

    def test_score_beyond_relative_tolerance(self) -> None:
        """A score off by more than the tolerance is a mismatch that says so."""
        report = compare([event(score=0.5)], [event(score=0.8)], Tolerances(score_relative=0.1))
        assert len(report.mismatched) == 1 and not report.missing and not report.unexpected
        assert report.mismatched[0].problems == ["score: 0.5, expected 0.8 (-37.5%), tolerance 10%"]

    def test_score_near_zero(self) -> None:
        """For an expected score of 0 the absolute tolerance applies."""
        assert compare([event(score=1e-9)], [event(score=0.0)]).ok
        assert not compare([event(score=0.01)], [event(score=0.0)]).ok

    def test_score_null(self) -> None:
        """A missing score where one was expected (or the reverse) is a mismatch."""
        assert not compare([event(score=None)], [event(score=0.8)]).ok
        assert compare([event(score=None)], [event(score=None)]).ok

    def test_severity(self) -> None:
        """Severity must be equal."""
        report = compare([event(severity="warning")], [event(severity="alarm")])
        assert report.mismatched[0].problems == ["severity: warning, expected alarm"]

    def test_body_is_not_compared(self) -> None:
        """The task-specific body may differ (it is checked by the tasks' own tests)."""
        assert compare([event(cluster=3)], [event(cluster=4)]).ok

    def test_health_is_ignored(self) -> None:
        """Periodic health events are ignored by default and counted as such."""
        report = compare([event(), event(type_="health", severity="info")], [event()])
        assert report.ok and report.ignored == 1

    def test_optimal_pairing_by_time(self) -> None:
        """Pairing maximises matches where nearest-first pairing would leave one event unmatched."""
        expected = [event(at_s=1.0), event(at_s=3.2)]
        actual = [event(at_s=1.9), event(at_s=0.0)]
        report = compare(actual, expected, Tolerances(time_s=1.5))
        assert report.ok and len(report.matched) == 2

    def test_pairing_prefers_agreement(self) -> None:
        """Two close events are paired so that severities agree, not merely by nearest time."""
        expected = [event(at_s=10.0, severity="warning"), event(at_s=10.5, severity="alarm")]
        actual = [event(at_s=10.4, severity="warning"), event(at_s=10.1, severity="alarm")]
        assert compare(actual, expected).ok

    def test_counts(self) -> None:
        """Extra and absent events are reported one by one."""
        expected = [event(at_s=t) for t in (10, 20, 30)]
        actual = [event(at_s=t) for t in (10, 30, 40, 50)]
        report = compare(actual, expected)
        assert (len(report.matched), len(report.missing), len(report.unexpected)) == (2, 1, 2)
        assert [e.source_ns for e in report.missing] == [T0 + 20 * SECOND]

    def test_many_events_stay_fast(self) -> None:
        """Thousands of events in one dense stream (a single 2000 x 2000 pairing) compare in seconds."""
        expected = [event(at_s=t * 0.5) for t in range(2000)]
        actual = [event(at_s=t * 0.5 + 0.1) for t in range(2000)]
        start = time.monotonic()
        assert compare(actual, expected).ok
        assert time.monotonic() - start < 3.0

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["pump-1", "pump-2"]), st.integers(0, 600),
                              st.sampled_from(["info", "warning", "alarm"]), st.floats(0.05, 1.0)),
                    max_size=12),
           st.randoms(use_true_random=False), st.floats(-0.4, 0.4))
    def test_jitter_and_shuffle_still_pass(self, specs: list[tuple[str, int, str, float]],
                                           rng: random.Random, jitter: float) -> None:
        """Any set of events, shuffled and shifted by less than the tolerance, passes."""
        expected = [event(sensor=s, at_s=t, severity=v, score=x) for s, t, v, x in specs]
        actual = [event(sensor=s, at_s=t + jitter, severity=v, score=x * 1.05) for s, t, v, x in specs]
        rng.shuffle(actual)
        report = compare(actual, expected, Tolerances(time_s=1.0))
        assert report.ok, report.render()


class TestReport:
    """The rendered report names what went wrong, readably."""

    def test_render_lists_every_problem(self) -> None:
        """Missing, unexpected and mismatched events each appear with sensor, type, time and details."""
        expected = [event(sensor="pump-2", at_s=10, severity="alarm", score=0.93), event(sensor="pump-3")]
        actual = [event(sensor="pump-2", at_s=10.4, severity="warning", score=0.71), event(sensor="pump-4")]
        text = compare(actual, expected).render()
        assert text.startswith("replay check FAILED: 2 expected, 2 actual events; 0 matched, 1 mismatched, "
                               "1 missing, 1 unexpected")
        assert "missing (expected, not produced):\n  2026-11-29T08:00:10.000000Z  pump-3  " \
               "vibration/anomaly_raised  warning  score 0.8  [expected #2]" in text
        assert "unexpected (produced, not expected):\n  2026-11-29T08:00:10.000000Z  pump-4" in text
        assert "[expected #1, actual #1, +0.400 s]\n      severity: warning, expected alarm\n" \
               "      score: 0.71, expected 0.93 (-23.7%), tolerance 10%" in text


class TestReadEvents:
    """JSON Lines files are read strictly, with errors that point at the line."""

    def test_round_trip(self, tmp_path: Path) -> None:
        """Events written one per line (blank lines allowed) are read back."""
        events = [event(at_s=1), event(at_s=2)]
        path = tmp_path / "events.jsonl"
        path.write_text(json.dumps(events[0]) + "\n\n" + json.dumps(events[1]) + "\n")
        assert read_events(path) == events

    def test_bad_line(self, tmp_path: Path) -> None:
        """A line that is not JSON is reported with its line number."""
        path = tmp_path / "events.jsonl"
        path.write_text(json.dumps(event()) + "\n{oops\n")
        with pytest.raises(EventsError, match=r"events\.jsonl:2: not JSON"):
            read_events(path)

    def test_not_an_object(self, tmp_path: Path) -> None:
        """A line holding something other than an object is refused."""
        path = tmp_path / "events.jsonl"
        path.write_text("[1, 2]\n")
        with pytest.raises(EventsError, match=r"events\.jsonl:1: expected a JSON object"):
            read_events(path)

    def test_missing_field(self) -> None:
        """An event without a compared field is refused, naming the field and the event."""
        broken = event()
        del broken["source_time"]
        with pytest.raises(EventsError, match="actual event #1 lacks source_time"):
            compare([broken], [event()])

    def test_bad_time(self) -> None:
        """A source_time that is not RFC 3339 with a zone is refused."""
        for text in ("yesterday", "2026-11-29T08:00:00"):
            with pytest.raises(EventsError, match="source_time"):
                compare([], [dict(event(), source_time=text)])

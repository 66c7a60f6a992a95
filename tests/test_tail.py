"""``edge-agent tail`` as an operator console: filters, routine summaries, the status line, readable values."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.sinks import compact, render_event
from agent.tail import OperatorConsole, TailFilter, status_line
from agent.testing import publisher, stop_client, wait_until
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[1]


def event(type_: str = "anomaly_raised", severity: str = "alarm", sensor: str = "pump-01", task: str = "vibration",
          **body: Any) -> dict[str, Any]:
    return {"event_id": f"{type_}-{sensor}-{severity}-{len(body)}", "device": "line3", "task": task,
            "type": type_, "sensor": sensor, "severity": severity, "score": 0.912345,
            "source_time": "2026-12-02T10:00:01.123456Z", "body": body}


class TestRendering:
    def test_one_line_with_device_one_rounded_score_and_no_value_cut(self) -> None:
        line = render_event(event(score=0.912345, fault="outer_race", history=list(range(40)),
                                  location={"box": [1, 2, 3, 4], "peak": [5, 6]}))
        assert "line3 vibration/anomaly_raised pump-01 score=0.912 " in line
        assert line.count("score=") == 1
        assert "history=[40 items]" in line and "location={box:[1,2,3,4],peak:[5,6]}" in line
        assert "..." not in line

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
                        lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=6), max_leaves=30))
    def test_any_value_is_shown_whole_or_as_its_size(self, value: Any) -> None:
        """Never a value cut in the middle: either the whole (rounded) value or a size in brackets."""
        text = compact(value)
        assert len(text) <= 48 or text.startswith("<")
        assert not text.endswith("...")

    def test_colour_only_when_asked(self) -> None:
        assert "\033[" not in render_event(event())
        assert render_event(event(), colour=True).startswith("\033[1;31m")


class TestConsole:
    def console(self, **selection: Any) -> tuple[OperatorConsole, io.StringIO]:
        out = io.StringIO()
        return OperatorConsole(TailFilter(**selection), summary_s=60, out=out), out

    def test_alarms_print_at_once_and_routine_events_are_summarised(self) -> None:
        console, out = self.console()
        console.show("edge/line3/events/vibration/anomaly_raised", event())
        for index in range(5):
            console.show("t", event("part_inspected", "info", f"camera-{index}", "quality", decision="accept"))
        console.show("t", event("health", "info"))
        assert out.getvalue().count("\n") == 1
        console.tick(console.last_summary + 30)
        assert out.getvalue().count("\n") == 1  # not yet: the interval has not passed
        console.tick(console.last_summary + 61)
        summary = out.getvalue().splitlines()[-1]
        assert "routine: 6 info events" in summary and "quality/part_inspected 5" in summary
        console.tick(console.last_summary + 61)
        assert out.getvalue().count("\n") == 2  # nothing new: no empty summary

    def test_filters_by_severity_task_type_and_sensor(self) -> None:
        console, out = self.console(min_severity="warning", tasks=["vibration"], sensors=["pump-0*"])
        assert console.show("t", event(sensor="pump-01"))
        assert not console.show("t", event(sensor="fan-01"))
        assert not console.show("t", event(task="quality", sensor="pump-02"))
        assert not console.show("t", event(severity="info"))
        assert out.getvalue().count("\n") == 1

    def test_info_events_of_a_named_type_are_shown_one_by_one(self) -> None:
        console, out = self.console(types=["speaker_turn"])
        console.show("t", event("speaker_turn", "info", "mic-01", "speakers", cluster=2))
        assert not console.show("t", event("health", "info"))
        assert "speakers/speaker_turn mic-01" in out.getvalue()

    def test_status_is_one_short_line(self) -> None:
        status = {"device": "line3", "state": "online", "version": "0.1", "stats": {
            "uptime_s": 3725.2, "sensor_totals": {"tracked": 12, "rejected": 3, "gaps": 0, "offline": 1},
            "tasks": {"vibration": {"processed": 5000, "events": 12}},
            "sinks": {"mqtt": {"pending": 4}}, "sensors": {f"s{i}": {} for i in range(20)}}}
        line = status_line(status)
        assert "\n" not in line and len(line) < 160
        assert "line3: online" in line and "rejected 3" in line and "offline 1" in line
        assert "gaps" not in line and "outbox 4 pending" in line
        assert "offline (connection lost)" in status_line({"device": "line3", "state": "offline",
                                                           "reason": "connection lost"})
        assert "standing in" not in line

    def test_status_names_the_agents_a_standby_stands_in_for(self) -> None:
        stats = {"uptime_s": 10, "standby": {"standing_in_for": ["line3-02"], "takeovers": 1}}
        assert "standing in for line3-02" in status_line({"device": "line3-01", "state": "online", "stats": stats})


def test_tail_against_a_broker(broker: Broker) -> None:
    """The real command: a 'waiting' line once connected, then the status line, the alarm at once, and the two
    routine events only as a summary."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "tail", "--mqtt", f"127.0.0.1:{broker.port}", "--summary-s", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert process.stdout is not None
    output = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(output.readline, "")), daemon=True)
    reader.start()
    client = None
    try:
        wait_until(lambda: any("waiting for events" in line for line in lines), timeout=30)
        client = publisher(broker.port)
        client.publish("edge/line3/status", json.dumps({"device": "line3", "state": "online"}), qos=1)
        client.publish("edge/line3/events/vibration/anomaly_raised", json.dumps(event()), qos=1)
        for index in range(2):
            routine = event("part_inspected", "info", f"camera-{index}", "quality")
            client.publish("edge/line3/events/quality/part_inspected", json.dumps(routine), qos=1)
        wait_until(lambda: any("routine:" in line for line in lines), timeout=30)
    finally:
        if client is not None:
            stop_client(client)
        process.terminate()
        process.wait(10)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
    text = "".join(lines)
    assert "status line3: online" in text and "ALARM line3 vibration/anomaly_raised pump-01" in text
    assert "routine: 2 info events in the last 1 s (quality/part_inspected 2)" in text
    assert "camera-0" not in text  # routine events are not printed one by one

"""``edge-agent report``: one self-contained HTML page of an events file, checked in a real headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agent.report import Events, render

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def event(type_: str, sensor: str, task: str, second: int, severity: str = "info", score: float | None = 0.5,
          **body: Any) -> dict[str, Any]:
    return {"event_id": f"{type_}-{sensor}-{second}", "device": "line3", "task": task, "type": type_,
            "sensor": sensor, "severity": severity, "score": score,
            "source_time": f"2026-12-02T10:{second // 60:02d}:{second % 60:02d}.000000Z", "body": body}


def shift(folder: Path) -> Path:
    """A small shift: a pump that alarms, a camera with a reject (and its crop), a conversation, pages, trouble."""
    events = [event("health", "pump-01", "vibration", t, score=0.1 * t, health=100 - t, state="normal")
              for t in range(0, 60, 5)]
    events.append(event("anomaly_raised", "pump-01", "vibration", 40, "alarm", 4.2, health=30.0,
                        likely_fault="outer_race"))
    events += [event("part_inspected", "camera-00", "quality", t, "alarm" if t == 20 else "info",
                     decision="reject" if t == 20 else "accept") for t in range(0, 60, 4)]
    events += [event("speaker_turn", "mic-00", "speakers", 3 * i, cluster=i % 3, name="Alice" if i % 3 == 0 else None,
                     start=f"2026-12-02T10:00:{3 * i:02d}.000000Z", end=f"2026-12-02T10:00:{3 * i + 2:02d}.000000Z")
               for i in range(10)]
    events += [event("symbols_detected", "page-cam", "symbols", t, counts={"noteheadBlack": 120, "restQuarter": 7})
               for t in (10, 30)]
    events.append(event("input_rejected", "pump-09", "agent", 12, "warning", None, reason="sample rate 5e-324 Hz"))
    path = folder / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n{not json\n")
    crops = folder / "attachments"
    crops.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="JPEG")
    (crops / "part_inspected-camera-00-20.jpg").write_bytes(buffer.getvalue())
    return path


def test_the_page_holds_every_section_and_fetches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "agent.cli", "report", str(shift(tmp_path)), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    for heading in ("Machines", "Camera stations", "Microphones", "Page stations", "The agent"):
        assert f"<h2>{heading}</h2>" in page
    assert "1 alarm(s), likely outer_race" in page and "15 parts, 1 rejected (6.7 %)" in page
    assert page.count("data:image/jpeg;base64,") == 1  # the reject's crop, inline
    assert "10 turns, 3 speakers" in page and "<td>noteheadBlack</td><td>240</td>" in page
    assert "sample rate 5e-324 Hz" in page and "1 line(s) of the events file could not be read" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from a network


def test_an_empty_file_gives_a_page_not_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "events.jsonl"
    empty.write_text("")
    assert "0 events" in render(Events.read(empty), None, "empty")


def _chromium(page: Path, screenshot: Path) -> str:
    """Load the page headless, take a screenshot; returns Chromium's log, where console messages appear."""
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--screenshot={screenshot}", "--window-size=1000,2400", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_page_loads_in_chromium_without_console_errors(tmp_path: Path) -> None:
    """A control page with a script error shows that console errors are seen; the report has none."""
    control = tmp_path / "control.html"
    control.write_text("<html><body><script>console.error('planted'); undefined_function();</script></body></html>")
    assert "planted" in _chromium(control, tmp_path / "control.png")
    out = tmp_path / "report.html"
    from agent.report import write_report

    write_report(shift(tmp_path), out)
    log = _chromium(out, tmp_path / "report.png")
    assert "CONSOLE" not in log, log[-2000:]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.size == (1000, 2400)
        assert len(np.unique(np.asarray(shot.convert("L")))) > 10  # charts and text were drawn, not a blank page

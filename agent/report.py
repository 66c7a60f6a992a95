"""``edge-agent report``: one self-contained HTML page for a shift or a replay, from an events file.

Per machine the health and anomaly scores over time with alarms marked; per camera station the
reject rate and a gallery of reject crops; per microphone a speaker timeline; per page station the
symbol counts; and the agent's own troubles (rejected input, offline sensors, quarantines,
storage). Charts are inline SVG and crops inline JPEG (``data:`` URIs): the page fetches nothing.
"""

from __future__ import annotations

import base64
import collections
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MACHINE_TYPES = frozenset({"health", "anomaly_raised", "anomaly_updated", "anomaly_cleared"})
TROUBLE_TYPES = frozenset({"input_rejected", "sensor_offline", "sensor_quarantined", "storage_degraded",
                           "clock_jump"})
MAX_CROPS = 24


def seconds(iso: str) -> float:
    """ISO 8601 UTC (``...Z``) -> POSIX seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Events:
    """The events of a file, grouped for the report (unparseable lines counted, not fatal)."""

    all: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0

    @classmethod
    def read(cls, path: Path) -> Events:
        events = cls()
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
                seconds(event["source_time"])
                events.all.append(event)
            except (ValueError, KeyError, TypeError, AttributeError):
                events.bad_lines += 1
        events.all.sort(key=lambda event: event["source_time"])
        return events

    def by_sensor(self, types: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        wanted = frozenset(types)
        grouped: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for event in self.all:
            if event.get("type") in wanted:
                grouped[str(event.get("sensor"))].append(event)
        return dict(sorted(grouped.items()))


def line_chart(series: dict[str, list[tuple[float, float]]], alarms: list[float], span: tuple[float, float],
               width: int = 720, height: int = 160) -> str:
    """An inline SVG chart of named (time, value) series, alarm times as red vertical lines."""
    start, end = span
    values = [value for points in series.values() for _, value in points] or [0.0]
    low, high = min(0.0, min(values)), max(values) or 1.0
    if high <= low:
        high = low + 1.0

    def x(t: float) -> float:
        return 40 + (width - 50) * (t - start) / max(end - start, 1e-9)

    def y(v: float) -> float:
        return height - 20 - (height - 30) * (v - low) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="40" y="10" width="{width - 50}" height="{height - 30}" fill="#fafafa" stroke="#ccc"/>',
             f'<text x="2" y="{y(high) + 4:.0f}" font-size="10">{high:.3g}</text>',
             f'<text x="2" y="{y(low):.0f}" font-size="10">{low:.3g}</text>']
    for t in alarms:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="10" y2="{height - 20}" stroke="#d62728" '
                     'stroke-dasharray="3,2"><title>alarm</title></line>')
    for index, (name, points) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        parts.append(f'<text x="{50 + 120 * index}" y="{height - 5}" font-size="11" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline(turns: list[tuple[float, float, str]], span: tuple[float, float], width: int = 720) -> str:
    """An inline SVG speaker timeline: one row per speaker, a bar per turn."""
    speakers = sorted({label for _, _, label in turns})
    start, end = span
    height = 20 * len(speakers) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for row, speaker in enumerate(speakers):
        parts.append(f'<text x="2" y="{20 * row + 24}" font-size="11">{html.escape(speaker)}</text>')
    for begin, finish, label in turns:
        row = speakers.index(label)
        left = 100 + (width - 110) * (begin - start) / max(end - start, 1e-9)
        span_px = max(1.0, (width - 110) * (finish - begin) / max(end - start, 1e-9))
        parts.append(f'<rect x="{left:.1f}" y="{20 * row + 12}" width="{span_px:.1f}" height="14" '
                     f'fill="{PALETTE[row % len(PALETTE)]}"><title>{html.escape(label)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def machines_section(events: Events, span: tuple[float, float]) -> str:
    blocks = []
    for sensor, found in events.by_sensor(MACHINE_TYPES).items():
        health = [(seconds(e["source_time"]), float(e["body"]["health"])) for e in found
                  if isinstance(e.get("body", {}).get("health"), (int, float))]
        anomaly = [(seconds(e["source_time"]), float(e["score"])) for e in found
                   if isinstance(e.get("score"), (int, float))]
        alarms = [seconds(e["source_time"]) for e in found if e["type"] == "anomaly_raised"]
        faults = sorted({str(e.get("body", {}).get("likely_fault") or "") for e in found
                         if e["type"] == "anomaly_raised"} - {""})
        charts = line_chart({"health index (0-100)": health}, alarms, span) + line_chart(
            {"anomaly score": anomaly}, alarms, span)
        blocks.append(f"<h3>{html.escape(sensor)}</h3><p>{len(alarms)} alarm(s)"
                      f"{', likely ' + html.escape(', '.join(faults)) if faults else ''}</p>{charts}")
    return _section("Machines", blocks)


def cameras_section(events: Events, span: tuple[float, float], attachments: Path | None) -> str:
    blocks = []
    for sensor, parts in events.by_sensor({"part_inspected"}).items():
        rejects = [e for e in parts if e.get("body", {}).get("decision") == "reject"]
        buckets: dict[int, list[bool]] = collections.defaultdict(list)
        width = max((span[1] - span[0]) / 40, 1.0)
        for e in parts:
            buckets[int((seconds(e["source_time"]) - span[0]) // width)].append(e.get("body", {}).get("decision")
                                                                                == "reject")
        rate = [(span[0] + (index + 0.5) * width, 100.0 * sum(b) / len(b)) for index, b in sorted(buckets.items())]
        chart = line_chart({"reject rate %": rate}, [], span)
        crops = "".join(_crop(attachments, e) for e in rejects[:MAX_CROPS])
        share = 100.0 * len(rejects) / len(parts)
        blocks.append(f"<h3>{html.escape(sensor)}</h3><p>{len(parts)} parts, {len(rejects)} rejected "
                      f"({share:.1f} %)</p>{chart}<div class='gallery'>{crops}</div>")
    return _section("Camera stations", blocks)


def _crop(attachments: Path | None, event: dict[str, Any]) -> str:
    if attachments is None:
        return ""
    path = attachments / f"{event.get('event_id')}.jpg"
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    title = html.escape(f"{event['sensor']} {event['source_time']} score {event.get('score')}")
    return f'<img alt="reject crop" title="{title}" src="data:image/jpeg;base64,{data}">'


def microphones_section(events: Events) -> str:
    blocks = []
    for sensor, turns in events.by_sensor({"speaker_turn"}).items():
        rows = []
        for e in turns:
            body = e.get("body", {})
            label = body.get("name") or f"cluster {body.get('cluster')}"
            try:
                rows.append((seconds(body["start"]), seconds(body["end"]), str(label)))
            except (KeyError, ValueError, TypeError):
                continue
        if rows:
            span = (min(r[0] for r in rows), max(r[1] for r in rows))
            blocks.append(f"<h3>{html.escape(sensor)}</h3><p>{len(rows)} turns, "
                          f"{len({r[2] for r in rows})} speakers</p>{timeline(rows, span)}")
    return _section("Microphones", blocks)


def pages_section(events: Events) -> str:
    blocks = []
    for sensor, pages in events.by_sensor({"symbols_detected"}).items():
        totals: collections.Counter[str] = collections.Counter()
        for e in pages:
            counts = e.get("body", {}).get("counts", {})
            if isinstance(counts, dict):
                totals.update({str(k): int(v) for k, v in counts.items() if isinstance(v, int)})
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>" for name, count in totals.most_common())
        blocks.append(f"<h3>{html.escape(sensor)}</h3><p>{len(pages)} pages, {sum(totals.values())} symbols</p>"
                      f"<table><tr><th>class</th><th>count</th></tr>{rows}</table>")
    return _section("Page stations", blocks)


def agent_section(events: Events) -> str:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for e in events.all:
        if e.get("type") in TROUBLE_TYPES:
            counts[(str(e["type"]), str(e.get("sensor")))] += 1
            if e["type"] == "input_rejected":
                reasons[str(e.get("body", {}).get("reason", "?"))[:120]] += 1
    rows = "".join(f"<tr><td>{html.escape(kind)}</td><td>{html.escape(sensor)}</td><td>{count}</td></tr>"
                   for (kind, sensor), count in sorted(counts.items()))
    top = "".join(f"<li>{count} x {html.escape(reason)}</li>" for reason, count in reasons.most_common(10))
    body = (f"<table><tr><th>event</th><th>sensor</th><th>count</th></tr>{rows}</table><ul>{top}</ul>"
            if rows else "<p>No rejected input, offline sensors, quarantines or storage trouble.</p>")
    if events.bad_lines:
        body += f"<p>{events.bad_lines} line(s) of the events file could not be read.</p>"
    return _section("The agent", [body])


def _section(title: str, blocks: list[str]) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(blocks)}</section>" if blocks else ""


STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}h2{border-bottom:1px solid #ccc}"
         "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}"
         ".gallery img{height:96px;margin:2px;border:1px solid #ccc}")


def render(events: Events, attachments: Path | None, title: str) -> str:
    """The whole page."""
    if events.all:
        span = (seconds(events.all[0]["source_time"]), seconds(events.all[-1]["source_time"]))
        period = f"{events.all[0]['source_time']} to {events.all[-1]['source_time']}"
    else:
        span, period = (0.0, 1.0), "no events"
    kinds = collections.Counter(f"{e.get('task')}/{e.get('type')} ({e.get('severity')})" for e in events.all)
    overview = "".join(f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>"
                       for name, count in sorted(kinds.items()))
    devices = ", ".join(sorted({str(e.get("device")) for e in events.all})) or "-"
    sections = [machines_section(events, span), cameras_section(events, span, attachments),
                microphones_section(events), pages_section(events), agent_section(events)]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Devices: {html.escape(devices)}. {html.escape(period)}. {len(events.all)} events.</p>"
            f"<table><tr><th>events</th><th>count</th></tr>{overview}</table>{''.join(sections)}</body></html>")


def write_report(events_path: Path, out: Path, attachments: Path | None = None) -> int:
    """Read the events, write the page; returns the number of events."""
    events = Events.read(events_path)
    if attachments is None and (events_path.parent / "attachments").is_dir():
        attachments = events_path.parent / "attachments"
    out.write_text(render(events, attachments, f"edge-agent report: {events_path.name}"))
    return len(events.all)

"""Station normals evaluated through the agent's quality task, on our renderer and on the independent one.

    python -m agent.tasks.quality.evaluate_stations [--learn 100] [--good 150] [--defective 50]

Each station is one camera: it learns its normal from ``--learn`` good frames (the task's own
learning, as in the field), then inspects held-out good and defective parts.  Stations of the
independent renderer (``sensors/simulate/tube_alt.py``, written apart from ours and used only here)
keep one lighting, tube width, opacity and JPEG quality each, as a real station does; pose, bend and
position vary per part.  Three decisions are compared on the same frames: the classifier alone at
the shipped threshold, the station's novelty alone, and the task's combination.  Writes
``models/quality/stations.json``, then ``python -m models.quality.station_report`` makes
``stations.md`` and ``stations.png`` from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import structlog

import models
from agent.tasks.base import TaskContext
from agent.tasks.quality.config import QualityConfig
from agent.tasks.quality.task import QualityTask
from models.runtime import load_model
from sensors.simulate.parts import Part, PartGenerator
from sensors.simulate.tube_alt import render_part_with_conditions
from sensors.wire import Kind, SensorMessage

HERE = Path(models.__file__).resolve().parent / "quality"
#: the independent renderer's stations: fixed optics per station, pose and position free
ALT_STATIONS: dict[str, dict[str, Any]] = {
    "alt-backlit": {"lighting": "backlit", "width_px": 70, "opacity": 0.25, "jpeg_quality": 85},
    "alt-darkfield": {"lighting": "darkfield", "width_px": 100, "opacity": 0.3, "jpeg_quality": 75},
    "alt-backlit-wide": {"lighting": "backlit", "width_px": 120, "opacity": 0.4, "jpeg_quality": 65},
    "alt-darkfield-thin": {"lighting": "darkfield", "width_px": 50, "opacity": 0.15, "jpeg_quality": 90},
}
OWN_STATIONS = ("own-a", "own-b")
#: the outside test found false rejects clustering within this many pixels of the frame's border
BORDER_PX = 48
Render = Callable[[int, bool], tuple[Part, dict[str, Any]]]


def renderer(station: str, seed: int) -> Render:
    if station in ALT_STATIONS:
        conditions = ALT_STATIONS[station]
        return lambda index, defective: render_part_with_conditions(seed, index, defective, **conditions)
    generator = PartGenerator(seed)
    return lambda index, defective: (generator.part("test", index, defective=defective), {})  # pose: alt only


def station_rows(task: QualityTask, station: str, render: Render, counts: tuple[int, int, int]) -> Iterator[dict]:
    """Learn the station from good parts, then one row per inspected held-out part."""
    learn, good, defective = counts
    for index in range(learn):
        task.process(message(station, render(index, False)[0], index))
    plan = [(10_000 + i, False) for i in range(good)] + [(20_000 + i, True) for i in range(defective)]
    for seq, (index, is_defective) in enumerate(plan, start=learn):
        part, conditions = render(index, is_defective)
        started = time.perf_counter()
        event = next(d for d in task.process(message(station, part, seq)) if d.type == "part_inspected")
        body = event.body
        assert body["station"] == "ready", f"{station} did not learn from {learn} frames"
        yield {"station": station, "defective": part.defective, "decision": body["decision"],
               "score": event.score, "classifier": body["classifier_score"], "novelty": body["novelty"],
               "angle": abs(float(conditions.get("angle_deg", 0.0))),
               "sizes": [d.size_px for d in part.defects], "seconds": time.perf_counter() - started,
               "near_border": near_border(body["location"]["peak"], part.image.shape)}


def near_border(peak: list[int], shape: tuple[int, ...], margin: int = BORDER_PX) -> bool:
    x, y = peak
    return min(x, y, shape[1] - 1 - x, shape[0] - 1 - y) < margin


def message(station: str, part: Part, seq: int) -> SensorMessage:
    return SensorMessage(station, Kind.FRAME, seq, 1_700_000_000_000_000_000 + seq * 10**8, part.image, 0.0,
                         meta={"part_id": f"{station}-{seq}"})


def rates(rows: list[dict], rejects: Callable[[dict], bool]) -> dict[str, float | int]:
    good = [r for r in rows if not r["defective"]]
    bad = [r for r in rows if r["defective"]]
    return {"false_rejects": float(np.mean([rejects(r) for r in good])) if good else float("nan"),
            "recall": float(np.mean([rejects(r) for r in bad])) if bad else float("nan"),
            "good": len(good), "defective": len(bad)}


def separation(rows: list[dict], key: str) -> dict[str, float]:
    """ROC AUC and the recall at 1 % false rejects with the threshold re-chosen on these very parts."""
    truth = np.array([r["defective"] for r in rows])
    score = np.array([r[key] for r in rows], dtype=float)
    good = np.sort(score[~truth])
    cut = good[min(int(np.floor(len(good) * 0.99)), len(good) - 1)]
    above = score[truth][:, None] - score[~truth][None, :]
    auc = float(np.mean((above > 0) + 0.5 * (above == 0)))  # P(defective scores above good), ties halved
    return {"auc": auc, "recall_at_1pct": float(np.mean(score[truth] > cut))}


def summarise(rows: list[dict], threshold: float, gate_reject: float) -> dict[str, Any]:
    methods: dict[str, Callable[[dict], bool]] = {
        "classifier alone": lambda r: r["classifier"] > threshold,
        "station novelty alone": lambda r: r["novelty"] > gate_reject,
        "combined (the task)": lambda r: r["decision"] == "reject",
    }
    keys = {"classifier alone": "classifier", "station novelty alone": "novelty", "combined (the task)": "score"}
    summary: dict[str, Any] = {}
    for station in dict.fromkeys(r["station"] for r in rows):
        mine = [r for r in rows if r["station"] == station]
        summary[station] = {name: {**rates(mine, rule), **separation(mine, keys[name])}
                            for name, rule in methods.items()}
    alt = [r for r in rows if r["station"] in ALT_STATIONS]
    combined = methods["combined (the task)"]
    summary["alt by pose"] = {f"{low}-{low + 10} deg": rates([r for r in alt if low <= r["angle"] < low + 10],
                                                             combined) for low in (0, 10, 20)}
    summary["alt by defect size"] = {
        name: rates([r for r in alt if not r["defective"] or low <= max(r["sizes"]) < high], combined)
        for name, low, high in (("< 12 px", 0, 12), ("12-24 px", 12, 24), (">= 24 px", 24, 10**6))}
    false_rejects = [r for r in rows if not r["defective"] and r["decision"] == "reject"]
    summary["false rejects near the border"] = {
        "margin_px": BORDER_PX, "false_rejects": len(false_rejects),
        "near_border": sum(r["near_border"] for r in false_rejects),
        "frame_share_within_margin": 1 - (640 - 2 * BORDER_PX) * (480 - 2 * BORDER_PX) / (640 * 480)}
    summary["ms per frame (median, whole task)"] = float(np.median([r["seconds"] for r in rows]) * 1000)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn", type=int, default=100)
    parser.add_argument("--good", type=int, default=150)
    parser.add_argument("--defective", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    rows: list[dict] = []
    with TemporaryDirectory() as state:
        config = QualityConfig(station_normal=True, learn_frames=args.learn)
        task = QualityTask(config, TaskContext("eval", Path(state), load_model, structlog.get_logger("eval")))
        for number, station in enumerate([*ALT_STATIONS, *OWN_STATIONS]):
            rows += station_rows(task, station, renderer(station, args.seed + number),
                                 (args.learn, args.good, args.defective))
            print(f"{station}: done", flush=True)
        summary = summarise(rows, task.threshold, config.novelty_reject)
        task.close()
    summary["settings"] = {**vars(args), "output": str(args.output), **config.model_dump(include={
        "bank_size", "novelty_floor", "novelty_full", "novelty_reject"})}
    path = args.output / "stations.json"
    path.write_text(json.dumps(summary, indent=1))
    # The report's chart needs matplotlib, which the agent's layer never imports: a process of its own draws it.
    subprocess.run([sys.executable, "-m", "models.quality.station_report", str(path)], check=True)
    print((args.output / "stations.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

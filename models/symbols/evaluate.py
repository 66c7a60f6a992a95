"""Evaluate the shipped symbol detector through ONNX Runtime on held-out composers' whole pages.

    python -m models.symbols.evaluate

VOC AP at IoU 0.5 per class and its mean on: held-out composers' pages degraded like phone photos
(fonts seen in training, and fonts never seen), the same pages clean, and pages of the independently
written generator (models/symbols/soup.py); AP by symbol size; the confusion table.  Writes
``evaluation.json`` and the pictures (worst page overlays, energy map, learning curves per head).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.symbols import data, engrave, soup
from models.symbols.degrade import degrade
from models.symbols.metrics import Matcher
from models.symbols.runtime.pages import PageGeometry, PageResult, RunTiles, infer_page

FOLDER = Path(__file__).parent
#: symbol sizes (sqrt of box area, page pixels at a 12 px staff space): dots and small rests, noteheads and
#: accidentals, clefs and the like
SIZES = {"tiny (< 8 px)": (0.0, 8.0), "small (8-16 px)": (8.0, 16.0), "large (>= 16 px)": (16.0, 1e9)}


def onnx_runner(path: Path, threads: int = 2) -> RunTiles:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        energy, classes, log_size = session.run(None, {"page": tiles})
        return energy, classes, log_size

    return run


def degraded(pages: list[engrave.Page], seed: int) -> list[engrave.Page]:
    """Each page photographed: on a desk, tilted, unevenly lit, blurred, noisy, JPEG (one seed per page)."""
    out = []
    for index, page in enumerate(pages):
        image, boxes = degrade(page.image, page.boxes, np.random.default_rng(seed + index), desk=True)
        out.append(engrave.Page(image, boxes, page.labels, page.source))
    return out


def score(run: RunTiles, pages: list[engrave.Page], geometry: PageGeometry,
          keep: Callable[[engrave.Page, PageResult], None] | None = None) -> dict[str, Any]:
    """mAP, per-class AP, AP by size and confusion of the detector on these pages."""
    matcher = Matcher(len(engrave.CLASS_NAMES))
    for page in pages:
        result = infer_page(run, page.image, geometry)
        found = result.detections
        matcher.add(page.boxes, page.labels, found.boxes, found.labels, found.scores)
        if keep:
            keep(page, result)
    per_class = {name: matcher.average_precision(i) for i, name in enumerate(engrave.CLASS_NAMES)}
    return {"pages": len(pages), "objects": int(sum(len(p.labels) for p in pages)),
            "mAP50": matcher.mean_ap(),
            "per_class": per_class,
            "instances": {name: len(matcher.truths[i]) for i, name in enumerate(engrave.CLASS_NAMES)},
            "by_size": {name: matcher.mean_ap(bounds) for name, bounds in SIZES.items()},
            "confusion": matcher.confusion.tolist()}


def page_f1(page: engrave.Page, result: PageResult) -> float:
    """A page's detection F1 at IoU 0.5 ignoring class (to pick the worst pages to look at)."""
    matcher = Matcher(1)
    matcher.add(page.boxes, np.zeros(len(page.labels), np.int64), result.detections.boxes,
                np.zeros(len(result.detections), np.int64), result.detections.scores)
    hits = sum(r[1] for r in matcher.scored[0])
    return 2 * hits / max(len(page.labels) + len(result.detections), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=FOLDER / "model.onnx")
    parser.add_argument("--pages", type=int, default=40, help="held-out pages per split (at most 40)")
    parser.add_argument("--out", type=Path, default=FOLDER)
    args = parser.parse_args()
    from models.symbols import plots

    run = onnx_runner(args.model)
    geometry = PageGeometry()
    test = data.cached_pages("test", engrave.TEST_COMPOSERS, engrave.TRAIN_FONTS, 40, 3).pages[: args.pages]
    test_fonts = data.cached_pages("test-fonts", engrave.TEST_COMPOSERS, engrave.TEST_FONTS, 40, 4).pages[: args.pages]
    worst: list[tuple[float, engrave.Page, PageResult]] = []
    results = {
        "held_out_composers_photo": score(run, degraded(test, 1000), geometry,
                                          lambda p, r: worst.append((page_f1(p, r), p, r))),
        "held_out_composers_unseen_fonts_photo": score(run, degraded(test_fonts, 2000), geometry),
        "held_out_composers_clean": score(run, test, geometry),
        "independent_generator_photo": score(run, degraded(soup.pages(args.pages, seed=5), 3000), geometry),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=1))
    worst.sort(key=lambda item: item[0])
    plots.overlays([(p, r) for _, p, r in worst[:2]], args.out / "worst_pages.jpg")
    plots.energy_map(run, test[0], args.out / "energy_map.png")
    history = FOLDER / "history.json"
    if history.exists():
        plots.learning_curves(json.loads(history.read_text()), args.out / "learning_curves.png")
    for name, result in results.items():
        print(f"{name}: mAP@0.5 {result['mAP50']:.3f} on {result['pages']} pages, {result['objects']} objects; "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["by_size"].items()))


if __name__ == "__main__":
    main()

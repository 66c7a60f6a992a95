"""Evaluate both quality model variants on the held-out test split and write the model card.

    python -m models.quality.evaluate [--baseline FOLDER]

Test data: ``--parts`` held-out parts at the natural defect rate (accuracy, false rejects,
ROC/PR) plus ``--defective`` extra held-out defective parts (recall per defect type, size
and seen/unseen shape), rendered under the broad conditions, with false rejects and recall
per lighting and pose bucket; then the same indices of the old narrow test split (the 1.0
generator's conditions, ``--narrow-parts``/``--narrow-defective``), so the card shows the
model is no worse there.  ``--baseline`` (a folder with another model's ``model.onnx`` and
``manifest.yaml``, e.g. the previous release) is run on the broad split for comparison.  Each
model is run exactly as the agent runs it (ONNX Runtime, numpy tiling, the threshold from its
manifest).  Writes ``evaluation.json``, ``roc_pr.png``, ``failures.png`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from models.quality.export import onnx_runner
from models.quality.runtime.tiling import TileGeometry, infer
from models.quality.train import choose_threshold, geometry_of, load_config
from models.runtime.manifest import load_manifest
from sensors.simulate.parts import LabelNoise, Part, PartGenerator

TEST_DEFECT_OFFSET = 100_000
LOCATION_TOLERANCE = 8  # pixels: the heat map has one cell per 8 px


def located(peak: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x, y = peak
    t = LOCATION_TOLERANCE
    return any(x0 - t <= x < x1 + t and y0 - t <= y < y1 + t for x0, y0, x1, y1 in boxes)


class Variant:
    """One model under test and the per-part results collected for it."""

    def __init__(self, name: str, folder: Path, geometry: TileGeometry) -> None:
        self.name = name
        self.manifest = load_manifest(folder / "manifest.yaml")
        self.threshold = float(self.manifest.thresholds["reject"])
        self.run = onnx_runner(folder / "model.onnx")
        self.geometry = geometry
        self.rows: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    def inspect(self, part: Part, natural: bool) -> None:
        found = infer(self.run, part.image, self.geometry)
        peak, _ = self.geometry.peak_and_box(found.heat, 0.5 * found.score)
        boxes = [d.box for d in part.defects]
        scene = part.scene
        row = {"part": part.part_id, "natural": natural, "defective": part.defective, "score": found.score,
               "reject": found.score > self.threshold, "located": located(peak, boxes) if boxes else None,
               "defects": [(d.kind, d.variant, d.size_bucket, d.seen) for d in part.defects],
               "conditions": scene.conditions if scene else "narrow",
               "lighting": scene.lighting if scene else "backlit",
               "pose": scene.pose_bucket if scene else "0-10 deg"}
        self.rows.append(row)
        if row["conditions"] == "broad" and row["reject"] != part.defective and len(self.failures) < 24:
            self.failures.append(failure_case(part, peak, row))


def failure_case(part: Part, peak: tuple[int, int], row: dict[str, Any]) -> dict[str, Any]:
    """A 128 px crop around the defect (missed) or the peak (false reject) for the gallery."""
    if part.defects:
        x0, y0, x1, y1 = part.defects[0].box
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    else:
        cx, cy = peak
    left = int(np.clip(cx - 64, 0, part.image.shape[1] - 128))
    top = int(np.clip(cy - 64, 0, part.image.shape[0] - 128))
    boxes = [(b[0] - left, b[1] - top, b[2] - left, b[3] - top) for b in (d.box for d in part.defects)]
    what = ", ".join(f"{d.kind}/{d.variant} {d.size_px}px" for d in part.defects) or "good part"
    kind = "missed" if part.defects else "false reject"
    return {"crop": part.image[top : top + 128, left : left + 128], "boxes": boxes,
            "peak": (peak[0] - left, peak[1] - top), "title": f"{kind}: {what}\nscore {row['score']:.3f}"}


def summarise(variant: Variant, conditions: str = "broad") -> dict[str, Any]:
    """Accuracy, balanced accuracy, recall at the operating point and at 1% test false rejects, per group."""
    rows = [r for r in variant.rows if r["conditions"] == conditions]
    natural = [r for r in rows if r["natural"]]
    truth = np.array([r["defective"] for r in natural])
    reject = np.array([r["reject"] for r in natural])
    score = np.array([r["score"] for r in natural])
    defective = [r for r in rows if r["defective"]]
    good_scores = score[~truth]
    at_one = choose_threshold(good_scores, 0.01)
    recall = float(np.mean(reject[truth])) if truth.any() else float("nan")
    specificity = float(np.mean(~reject[~truth]))
    return {
        "threshold": variant.threshold,
        "natural_parts": len(natural), "natural_defective": int(truth.sum()), "extra_defective": len(defective)
        - int(truth.sum()),
        "accuracy": float(np.mean(reject == truth)),
        "balanced_accuracy": (recall + specificity) / 2,
        "false_reject_rate": 1 - specificity,
        "recall_natural": recall,
        "recall_all_defective": float(np.mean([r["reject"] for r in defective])),
        "recall_at_1pct_test_false_rejects": float(np.mean([r["score"] > at_one for r in defective])),
        "threshold_at_1pct_test_false_rejects": at_one,
        "located_share_of_caught": float(np.mean([r["located"] for r in defective if r["reject"]] or [np.nan])),
        "recall_by_group": recall_by_group(defective),
        "by_condition": by_condition(natural, defective, at_one),
    }


def by_condition(natural: list[dict[str, Any]], defective: list[dict[str, Any]],
                 at_one: float) -> dict[str, dict[str, dict[str, float]]]:
    """Per lighting and pose bucket: false-reject rate of the natural-rate good parts at the
    validation threshold, recall of all defective parts at it and at the split's 1%-false-reject
    threshold, with the group sizes."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in ("lighting", "pose"):
        groups = sorted({r[key] for r in natural + defective})
        table = {}
        for group in groups:
            good = [r for r in natural if r[key] == group and not r["defective"]]
            bad = [r for r in defective if r[key] == group]
            table[group] = {
                "good": len(good), "defective": len(bad),
                "false_reject_rate": float(np.mean([r["reject"] for r in good])) if good else float("nan"),
                "recall": float(np.mean([r["reject"] for r in bad])) if bad else float("nan"),
                "recall_at_1pct_test_false_rejects": float(np.mean([r["score"] > at_one for r in bad]))
                if bad else float("nan"),
            }
        out[key] = table
    return out


def recall_by_group(defective: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Part-level recall grouped by each defect's kind, size bucket and seen/unseen shape: [recall, n]."""
    groups: dict[str, dict[str, list[bool]]] = {"kind": defaultdict(list), "size": defaultdict(list),
                                                "distribution": defaultdict(list), "variant": defaultdict(list)}
    for row in defective:
        for kind, shape, bucket, seen in row["defects"]:
            groups["kind"][kind].append(row["reject"])
            groups["size"][bucket].append(row["reject"])
            groups["distribution"]["seen in training" if seen else "unseen size/shape"].append(row["reject"])
            groups["variant"][f"{kind}/{shape}"].append(row["reject"])
    return {name: {k: [float(np.mean(v)), len(v)] for k, v in sorted(g.items())} for name, g in groups.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="models/quality/train.yaml")
    parser.add_argument("--parts", type=int, default=2000, help="held-out parts at the natural defect rate")
    parser.add_argument("--defective", type=int, default=300, help="extra held-out defective parts")
    parser.add_argument("--narrow-parts", type=int, default=2000, help="natural-rate parts of the old narrow split")
    parser.add_argument("--narrow-defective", type=int, default=300, help="extra defective parts, narrow split")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="folder with another model (model.onnx, manifest.yaml) to compare, e.g. the last release")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    geometry = geometry_of(config)
    folder = config.output
    variants = [Variant(name, folder / "variants" / name, geometry) for name in config.variants]
    baseline = None
    if args.baseline is not None:
        baseline = Variant(f"baseline {load_manifest(args.baseline / 'manifest.yaml').version}", args.baseline,
                           geometry)
    started = time.monotonic()
    for conditions, parts, extra in (("broad", args.parts, args.defective),
                                     ("narrow", args.narrow_parts, args.narrow_defective)):
        generator = PartGenerator(config.data.seed, config.data.defect_rate, LabelNoise(), conditions=conditions)
        plan: list[tuple[int, bool | None, bool]] = [(i, None, True) for i in range(parts)]
        plan += [(TEST_DEFECT_OFFSET + i, True, False) for i in range(extra)]
        for count, (index, force, natural) in enumerate(plan, 1):
            part = generator.part("test", index, defective=force)
            for variant in variants + ([baseline] if baseline and conditions == "broad" else []):
                variant.inspect(part, natural)
            if count % 250 == 0:
                print(f"{conditions}: {count}/{len(plan)} parts, {time.monotonic() - started:.0f}s", flush=True)
    write_results(config.output, variants, PartGenerator(config.data.seed, config.data.defect_rate), geometry,
                  baseline)


def write_results(folder: Path, variants: list[Variant], generator: PartGenerator, geometry: TileGeometry,
                  baseline: Variant | None = None) -> None:
    from models.quality.card import write_card
    from models.quality.plots import gallery, roc_pr

    results = {v.name: {**summarise(v), "narrow": summarise(v, "narrow")} for v in variants}
    curves = {}
    for v in variants:
        natural = [r for r in v.rows if r["natural"] and r["conditions"] == "broad"]
        curves[v.name] = {"truth": np.array([r["defective"] for r in natural]),
                          "score": np.array([r["score"] for r in natural]),
                          "truth_all": np.array([r["defective"] for r in v.rows if r["conditions"] == "broad"]),
                          "score_all": np.array([r["score"] for r in v.rows if r["conditions"] == "broad"])}
    roc_pr(curves, folder / "roc_pr.png")
    published = load_manifest(folder / "manifest.yaml").training.get("variant", variants[-1].name)
    chosen = next(v for v in variants if v.name == published)
    missed = [f for f in chosen.failures if not f["title"].startswith("false")][:12]
    false_rejects = [f for f in chosen.failures if f["title"].startswith("false")][:6]
    gallery(missed + false_rejects, folder / "failures.png")
    lat = measure_latency(folder / "manifest.yaml", generator)
    report: dict[str, Any] = {"variants": results, "published": published, "latency": lat}
    if baseline is not None:
        report["baseline"] = {"name": baseline.name, "broad": summarise(baseline)}
    (folder / "evaluation.json").write_text(json.dumps(report, indent=1))
    write_card(folder, report)
    for name, r in results.items():
        print(f"{name}: accuracy {r['accuracy']:.4f} balanced {r['balanced_accuracy']:.4f} "
              f"false rejects {r['false_reject_rate']:.4f} recall {r['recall_natural']:.3f} "
              f"recall@1%FR {r['recall_at_1pct_test_false_rejects']:.3f}")
        n = r["narrow"]
        print(f"{name} (narrow split): accuracy {n['accuracy']:.4f} false rejects {n['false_reject_rate']:.4f} "
              f"recall@1%FR {n['recall_at_1pct_test_false_rejects']:.3f}")
        for key, groups in r["by_condition"].items():
            print(f"  {key}: " + ", ".join(f"{g} FR {v['false_reject_rate']:.4f} recall {v['recall']:.3f}"
                                          for g, v in groups.items()))
    print(f"latency per frame (ms): {lat}")


def measure_latency(manifest_path: Path, generator: PartGenerator, frames: int = 30) -> dict[str, float]:
    """CPU latency per frame along the agent's run-time path: JPEG decode, tiling, ONNX Runtime (1 thread)."""
    import io

    from PIL import Image

    from models.quality.runtime.manifest import QualityManifest
    from models.runtime import load_model
    from sensors.simulate.camera import CameraSimulator

    model = load_model(manifest_path)
    geometry = QualityManifest(model.manifest).preprocessing.geometry()
    input_name = model.manifest.inputs[0].name

    def run_tiles(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tile_prob, cell_prob, *_ = model.run({input_name: tiles})  # the third output: cell features
        return tile_prob, cell_prob

    def inspect(payload: bytes) -> None:
        image = np.asarray(Image.open(io.BytesIO(payload)).convert("L"), dtype=np.uint8)
        infer(run_tiles, image, geometry, 128)

    camera = CameraSimulator("camera-eval", 0.5, seed=generator.seed + 1)
    payloads = [bytes(camera.frame(i, 1 + i).data) for i in range(frames)]
    inspect(payloads[0])
    timings = []
    for payload in payloads:
        started = time.perf_counter()
        inspect(payload)
        timings.append((time.perf_counter() - started) * 1000)
    model.close()
    return {"median_ms": float(np.median(timings)), "p95_ms": float(np.percentile(timings, 95)),
            "frames": frames, "threads": 1}


if __name__ == "__main__":
    main()

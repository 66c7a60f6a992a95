"""Evaluate the shipped face detector through ONNX Runtime on held-out scenes of both generators.

    python -m models.faces.detector.evaluate

AP at IoU 0.5; precision and recall at the manifest's score threshold; recall by face size and per
demographic group (with the best-worst gap); landmark error (NME over the inter-ocular distance); on test
scenes of held-out identities (``faces.py``) and on scenes of the independent generator (``faces_alt.py``,
no landmarks).  Also milliseconds per 640 x 480 frame through ``FaceDetector`` on the CPU.  Writes
``evaluation.json`` and ``detections.jpg``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from models.faces.detector import metrics
from models.faces.detector.data import Scenes, load_scenes
from models.faces.detector.export import onnx_outputs
from models.faces.detector.train import CONFIG, load_config
from models.faces.runtime.detector import FaceDetector, decode
from models.runtime import load_manifest

FOLDER = Path(__file__).parent
#: longer box side in frame pixels (640 x 480): render_scene's 24-180 px faces have boxes of about 0.6-0.9 of that
SIZES = {"24-48 px": (0.0, 48.0), "48-96 px": (48.0, 96.0), "96-180 px": (96.0, 1e9)}
#: a looser match: faces_alt boxes the whole head (hair included), faces.py the face outline, so on the
#: independent set IoU 0.5 also counts a different idea of the box, not only missed faces
LOOSE_IOU = 0.3


def _loose_recall(scenes: Scenes, outputs: list[np.ndarray], threshold: float) -> dict[str, Any]:
    """Recall and per-group recall (with the gap) at IoU 0.3, at the shipped threshold."""
    heat, box, marks = outputs
    found: dict[str, list[bool]] = {}
    for i in range(len(heat)):
        boxes, _, scores = decode(heat[i, 0], box[i], marks[i], threshold, 50)
        hit = set(metrics.match(boxes, scores, scenes.boxes[i], LOOSE_IOU).face_of.tolist())
        for face, group in enumerate(scenes.groups[i]):
            found.setdefault(group, []).append(face in hit)
    by_group = {g: round(float(np.mean(v)), 4) for g, v in sorted(found.items())}
    every = [x for v in found.values() for x in v]
    return {"recall": round(float(np.mean(every)), 4) if every else None, "recall_by_group": by_group,
            "recall_group_gap": round(max(by_group.values()) - min(by_group.values()), 4) if by_group else None}


def _score_set(scenes: Scenes, outputs: list[np.ndarray], threshold: float, frame_scale: float) -> dict[str, Any]:
    """Every figure of one scene set; ``frame_scale`` converts input pixels to frame pixels."""
    heat, box, marks = outputs
    low: list[metrics.Matched] = []
    kept: list[metrics.Matched] = []
    errors: list[float] = []
    error_sides: list[float] = []
    group_errors: dict[str, list[float]] = {}
    found_by_face: list[bool] = []
    for i in range(len(heat)):
        boxes, lms, scores = decode(heat[i, 0], box[i], marks[i], 0.05, 50)
        low.append(metrics.match(boxes, scores, scenes.boxes[i]))
        chosen = scores >= threshold
        matched = metrics.match(boxes[chosen], scores[chosen], scenes.boxes[i])
        kept.append(matched)
        found = np.zeros(matched.faces, bool)
        order = np.argsort(-scores[chosen], kind="stable")
        for det, face in enumerate(matched.face_of):
            if face < 0:
                continue
            found[face] = True
            truth = scenes.landmarks[i][face]
            if np.all(np.isfinite(truth)):
                error = metrics.landmark_nme(lms[chosen][order][det], truth)
                errors.append(error)
                face_box = scenes.boxes[i][face]
                error_sides.append(max(face_box[2] - face_box[0], face_box[3] - face_box[1]) / frame_scale)
                group_errors.setdefault(scenes.groups[i][face], []).append(error)
        found_by_face.extend(found.tolist())
    found_all = np.array(found_by_face, bool)
    sides = np.concatenate([np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for b in scenes.boxes]) / frame_scale
    groups = np.array([g for frame in scenes.groups for g in frame])
    detections = sum(len(m.scores) for m in kept)
    faceless = [m for m, b in zip(kept, scenes.boxes, strict=True) if len(b) == 0]
    by_group = {g: round(float(found_all[groups == g].mean()), 4) for g in sorted(set(groups))}
    result: dict[str, Any] = {
        "frames": len(heat), "faces": len(found_all), "ap50": round(metrics.average_precision(low), 4),
        "recall": round(float(found_all.mean()), 4),
        "precision": round(sum(int(m.hit.sum()) for m in kept) / max(detections, 1), 4),
        "false_per_faceless_frame": round(float(np.mean([len(m.scores) for m in faceless])), 3) if faceless else None,
        "recall_by_size": {name: {"faces": int(np.sum((sides >= lo) & (sides < hi))),
                                  "recall": round(float(found_all[(sides >= lo) & (sides < hi)].mean()), 4)}
                           for name, (lo, hi) in SIZES.items() if np.any((sides >= lo) & (sides < hi))},
        "recall_by_group": by_group,
        "recall_group_gap": round(max(by_group.values()) - min(by_group.values()), 4),
    }
    result[f"at_iou_{LOOSE_IOU}"] = _loose_recall(scenes, outputs, threshold)
    if errors:
        result["landmark_nme"] = round(float(np.mean(errors)), 4)
        nme, at = np.array(errors), np.array(error_sides)
        result["landmark_nme_by_size"] = {name: round(float(nme[(at >= lo) & (at < hi)].mean()), 4)
                                          for name, (lo, hi) in SIZES.items() if np.any((at >= lo) & (at < hi))}
        result["landmark_nme_by_group"] = {g: round(float(np.mean(e)), 4) for g, e in sorted(group_errors.items())}
    return result


def time_frames(manifest: Path, count: int = 30) -> dict[str, float]:
    """Median and 90th percentile milliseconds of ``FaceDetector.detect`` on a 640 x 480 frame, CPU, 1 thread."""
    from sensors.simulate.faces import render_scene, sample_identities

    frame, _ = render_scene(sample_identities(4, 99), np.random.default_rng(0))
    detector = FaceDetector(manifest)
    try:
        detector.detect(frame)  # the first run allocates
        times = []
        for _ in range(count):
            start = time.perf_counter()
            detector.detect(frame)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        detector.close()
    return {"median_ms": round(float(np.median(times)), 2), "p90_ms": round(float(np.percentile(times, 90)), 2)}


def draw(scenes: list[tuple[Scenes, list[np.ndarray]]], threshold: float, path: Path, per_set: int = 6) -> None:
    """A grid of scenes: truth boxes in yellow, detections in green with their landmarks in red."""
    tiles = []
    for sc, (heat, box, marks) in scenes:
        for i in range(per_set):
            image = Image.fromarray(sc.images[i]).resize((640, 480))
            pen = ImageDraw.Draw(image)
            for b in sc.boxes[i] * 2:
                pen.rectangle(tuple(b.tolist()), outline=(255, 230, 0))
            boxes, lms, scores = decode(heat[i, 0], box[i], marks[i], threshold, 50)
            for b, m, s in zip(boxes * 2, lms * 2, scores, strict=True):
                pen.rectangle(tuple(b.tolist()), outline=(0, 255, 0), width=2)
                pen.text((b[0], b[1] - 11), f"{s:.2f}", fill=(0, 255, 0))
                for x, y in m:
                    pen.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(255, 0, 0))
            tiles.append(np.asarray(image))
    rows = [np.concatenate(tiles[r : r + 3], 1) for r in range(0, len(tiles), 3)]
    Image.fromarray(np.concatenate(rows, 0)).resize((960, 240 * len(rows))).save(path, quality=85)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--folder", type=Path, default=FOLDER, help="where manifest.yaml is and results go")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    manifest = load_manifest(args.folder / "manifest.yaml")
    threshold = manifest.thresholds["score"]
    frame_scale = 320 / config.data.width
    report: dict[str, Any] = {"model": manifest.name, "score_threshold": threshold, "iou_match": metrics.IOU_MATCH}
    drawn = []
    for name, split in (("synthetic_test", "test"), ("independent", "alt")):
        scenes = load_scenes(config.data, split)
        outputs = onnx_outputs(manifest.onnx_path, scenes.images)
        report[name] = _score_set(scenes, outputs, threshold, frame_scale)
        drawn.append((scenes, outputs))
        print(name, json.dumps(report[name]), flush=True)
    report["cpu_640x480"] = time_frames(args.folder / "manifest.yaml")
    print("cpu", report["cpu_640x480"])
    (args.folder / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    draw(drawn, threshold, args.folder / "detections.jpg")


if __name__ == "__main__":
    main()

"""Writes the quality model card (README.md) from the evaluation results and the training summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {"accuracy": 0.98, "recall_at_1pct_test_false_rejects": 0.95}
# 1.0.0 on the same narrow test parts (its card; the frames are bit-identical under conditions="narrow")
OLD_RELEASE = {"accuracy": 0.995, "false_reject_rate": 0.004117344312918214, "recall_all_defective": 0.9747899159663865,
               "recall_at_1pct_test_false_rejects": 0.9747899159663865}


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def variant_table(report: dict[str, Any], training: dict[str, dict[str, Any]]) -> list[str]:
    names = list(report["variants"])
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rows = [
        ("accuracy (natural defect rate)", "accuracy", pct),
        ("balanced accuracy", "balanced_accuracy", pct),
        ("false-reject rate (validation threshold)", "false_reject_rate", pct),
        ("defect recall, natural-rate parts", "recall_natural", pct),
        ("defect recall, all held-out defective parts", "recall_all_defective", pct),
        ("**defect recall at 1% test false rejects**", "recall_at_1pct_test_false_rejects", pct),
        ("rejects whose heat-map peak is on a defect (+-8 px)", "located_share_of_caught", pct),
        ("reject threshold (from validation, 1% false rejects)", "threshold", lambda v: f"{v:.4f}"),
    ]
    for title, key, fmt in rows:
        lines.append(f"| {title} | " + " | ".join(fmt(report["variants"][n][key]) for n in names) + " |")
    lines.append("| validation recall at the threshold | "
                 + " | ".join(pct(training[n]["val_recall"]) for n in names) + " |")
    lines.append("| training time (1 CPU thread) | "
                 + " | ".join(f"{training[n]['train_seconds']:.0f} s" for n in names) + " |")
    return lines


def group_tables(report: dict[str, Any]) -> list[str]:
    lines = []
    names = list(report["variants"])
    titles = {"kind": "defect kind", "size": "defect size (largest extent)",
              "distribution": "training distribution", "variant": "kind / shape"}
    for group, title in titles.items():
        lines += ["", f"| {title} | n | " + " | ".join(f"recall {n}" for n in names) + " |",
                  "|---" * (len(names) + 2) + "|"]
        keys = report["variants"][names[0]]["recall_by_group"][group]
        for key in keys:
            count = report["variants"][names[0]]["recall_by_group"][group][key][1]
            values = [pct(report["variants"][n]["recall_by_group"][group][key][0]) for n in names]
            lines.append(f"| {key} | {count} | " + " | ".join(values) + " |")
    return lines


def narrow_table(report: dict[str, Any]) -> list[str]:
    """The headline metrics on the old narrow test split (1.0 generator conditions), per variant, and 1.0.0's."""
    columns = [(n, v["narrow"]) for n, v in report["variants"].items()]
    columns.append(("1.0.0 (pretrained, from its card)", OLD_RELEASE))
    lines = ["| metric | " + " | ".join(n for n, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = [("accuracy (natural defect rate)", "accuracy"), ("false-reject rate (validation threshold)",
             "false_reject_rate"), ("defect recall, all held-out defective parts", "recall_all_defective"),
            ("**defect recall at 1% test false rejects**", "recall_at_1pct_test_false_rejects")]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(pct(v[key]) for _, v in columns) + " |")
    return lines


def condition_tables(report: dict[str, Any]) -> list[str]:
    """False rejects and recall per lighting and pose bucket on the broad test split."""
    columns = [(n, v) for n, v in report["variants"].items()]
    if "baseline" in report:
        columns.append((report["baseline"]["name"], report["baseline"]["broad"]))
    lines = []
    for key, title in (("lighting", "lighting"), ("pose", "pose (absolute angle)")):
        groups = columns[0][1]["by_condition"][key]
        lines += ["", f"| {title} | good / defective parts | "
                  + " | ".join(f"false rejects {n} | recall {n} | recall@1% {n}" for n, _ in columns) + " |",
                  "|---" * (2 + 3 * len(columns)) + "|"]
        for group, first in groups.items():
            cells = []
            for _, v in columns:
                g = v["by_condition"][key][group]
                cells += [pct(g["false_reject_rate"]), pct(g["recall"]), pct(g["recall_at_1pct_test_false_rejects"])]
            lines.append(f"| {group} | {first['good']} / {first['defective']} | " + " | ".join(cells) + " |")
    return lines


def baseline_lines(report: dict[str, Any]) -> str:
    if "baseline" not in report:
        return ""
    b = report["baseline"]["broad"]
    return (f"\nFor comparison, the previous release ({report['baseline']['name']}, trained on the narrow conditions "
            f"only) on this broad split: accuracy {pct(b['accuracy'])}, false rejects {pct(b['false_reject_rate'])} "
            f"at its threshold, recall at 1% test false rejects {pct(b['recall_at_1pct_test_false_rejects'])} "
            f"(its scores reach 1.0 on more than 1% of the good parts).\n")


def write_card(folder: Path, report: dict[str, Any]) -> Path:
    training = {n: json.loads((folder / "variants" / n / "history.json").read_text()) for n in report["variants"]}
    published = report["published"]
    best = report["variants"][published]
    onnx_kb = (folder / "model.onnx").stat().st_size / 1024
    reached = [f"{key.replace('_', ' ')}: {pct(best[key])} vs target {pct(target)} -> "
               f"{'reached' if best[key] >= target else 'NOT reached'}" for key, target in TARGETS.items()]
    text = TEMPLATE.format(
        published=published, onnx_kb=onnx_kb, latency=report["latency"],
        parts=best["natural_parts"], natural_defective=best["natural_defective"],
        extra=best["extra_defective"], variant_table="\n".join(variant_table(report, training)),
        group_tables="\n".join(group_tables(report)), reached="\n".join(f"- {r}" for r in reached),
        narrow_table="\n".join(narrow_table(report)), condition_tables="\n".join(condition_tables(report)),
        baseline=baseline_lines(report),
    )
    path = folder / "README.md"
    path.write_text(text)
    return path


TEMPLATE = """# Quality model card: tile CNN for defects on translucent tube parts

The agent's `quality` task (`agent/tasks/quality/`) runs this model on every camera frame
of a part and publishes one `part_inspected` event per part: accept (info) or reject (alarm)
with the defect location and a JPEG crop.  Published variant: **{published}** start
(`model.onnx`, {onnx_kb:.0f} KB; `manifest.yaml` holds tiling, normalisation and thresholds).
This file is generated by `python -m models.quality.evaluate`.

## Reproduce

    python -m models.quality.train --config models/quality/train.yaml   # seed, sizes, steps in the YAML
    python -m models.quality.evaluate                                  # this card, evaluation.json, PNGs

Training runs on one CPU thread: about 29 min wall time for data (3 min), pretraining and both
starts (6,000 steps, about 11 min each) on the shared 2-core development machine (under load
from other jobs); evaluation (broad and narrow test splits, three models) about 10 min.

## Data (`sensors/simulate/parts.py`, `sensors/simulate/tube.py`; training crops in `models/quality/data.py`)

Procedurally rendered 640x480 grayscale frames of a translucent tube (balloon-catheter like)
under **broad conditions** (`PartGenerator(seed)`, since 1.1.0), because an independent
renderer found 1.0.0 (trained on +-10 deg, backlit only) rejecting over half of the good parts
it drew:

- **lighting**: about half **backlit** (bright, uneven backlight with gradient, vignetting and
  glare; walls, lumen and defects dark) and half **dark-field** (dark, uneven background; walls,
  cut faces, creases and lumen scatter bright; defects scatter bright, 1-2x their backlit contrast);
- **pose and shape**: rotation +-30 deg, bends up to ~50 px sag across the frame in 60% of parts,
  diameters 40-130 px, wall, body and lumen opacities from faint to strong, specular streak;
- **extent**: in 35% of frames a finite segment with one or two visible cut ends; in 30% the tube
  runs at or across the top or bottom frame border (partly outside the frame);
- **camera**: focus blur (sigma 0-2.2 px), exposure/gain (x0.7-1.35 with clipping), shot and read
  noise, JPEG compression at quality 60-95 (85% of frames; Pillow encode/decode);
- **nuisances** (not defects, reported as known look-alikes for hard-negative crops): dust specks
  beside the part (dark when backlit, bright in dark-field) and soft specular glints on the tube.

Defects: scratches (curved lines, dark or bright), bubbles/inclusions (dark rim, bright core),
spots/contamination (irregular blobs), kinks (fold with centre-line jump, narrowing and crease);
pixel masks for all.  3% of parts are defective; 20% of those have 2-3 defects.  Every frame is a
function of (seed, split, index).  `PartGenerator(seed, conditions="narrow")` renders the 1.0
frames bit for bit (backlit, +-10 deg, diameters 52-100 px, the tube always spanning the frame):
the **old narrow test split** below.

- **train**: 30,000 parts; the ~900 labelled-defective parts and 1,600 labelled-good parts are
  rendered for "defect cropping".  Labels are noisy as human labels are: 5% of defective parts
  are labelled good, 0.3% of good parts labelled defective (with a wrongly painted region).
- **val**: 1,000 parts at the natural rate (the reject threshold is chosen on its good parts for
  1% false rejects) + 150 defective parts.  Clean labels.
- **test (held out)**: {parts} parts at the natural rate ({natural_defective} defective) + {extra}
  extra defective parts.  40% of the test defects have sizes or shapes never seen in training:
  tiny and very long scratches, zig-zag scratches, tiny, large, elongated and clustered bubbles,
  tiny and large spots, ring stains, speckle clusters, slight and severe kinks, constrictions.

## Model (`network.py`, `train.py`, `export.py`)

64x64 tiles, stride 56 (108 tiles per frame).  A small ResNet-style CNN (stride-2 stem, two
residual stages, widths 24-48-96, ~0.16 M parameters) gives an 8x8 grid of defect logits per
tile (one cell per 8x8 pixels); the tile score is the maximum cell, the part score the maximum
tile (max aggregation), and the stitched grids are the heat map whose peak locates the defect.
Training: crops around painted defect pixels (anywhere in the crop) and good crops (30% around
known look-alikes, the dust specks and glints the generator reports, as a team would collect hard
negatives from false rejects; 20% on busy pixels: walls, lumen, highlights; half anywhere),
40% defect crops per batch (resampling),
class-weighted BCE on the cells (positive weight 4) plus BCE on the tile maximum, flips,
gain/offset and noise augmentation, AdamW with a one-cycle schedule.  Two starts, same seed:
**random** initialisation, and **pretrained**: the backbone first learns to classify synthetic
primitives (none, line, disc, ring, blob cluster, step edge) on noisy, unevenly lit patches;
no tube renderer is involved, so it is a related task, not the target data.

![learning curves](learning_curves.png)

## Results on the held-out test split (broad conditions)

{variant_table}
{baseline}
### By lighting and pose (broad test split)

False rejects: natural-rate good parts of the group at the validation threshold; recall: all
held-out defective parts of the group (natural and extra) at the validation threshold, and at the
threshold giving 1% false rejects on the whole test split.
{condition_tables}

### The old narrow test split (1.0 conditions: backlit, +-10 deg, the tube spans the frame)

The same test indices rendered with `conditions="narrow"`, so these are the frames the 1.0.0 card
was measured on ({parts} natural-rate + {extra} extra defective parts), each model at its own
validation threshold (1.0.0: chosen on narrow validation parts; 1.1.0: on broad ones):

{narrow_table}

Recall by group (held-out defective parts, natural and extra; a part with several defects
counts once per defect):
{group_tables}

Targets for the published variant ({published}):
{reached}

![ROC and PR curves](roc_pr.png)

Failure cases of the published variant (green: true defect box, red cross: heat-map peak when
it lies in the crop; a missed defect's peak is often elsewhere on the part):

![failure gallery](failures.png)

## On an independently written renderer, and with station normals

`sensors/simulate/tube_alt.py` renders the same kind of part with other physics (written apart from
ours, used only for testing).  `python -m agent.tasks.quality.evaluate_stations` runs the agent's
task on four of its stations (one lighting, width, opacity and JPEG quality each) and two of ours,
the classifier alone, a station normal alone and both combined: [stations.md](stations.md).
With 1.1.0 the classifier alone rejects 5-15 % of that renderer's good parts at 70-84 % recall
(ROC AUC 0.87-0.93; 1.0.0 rejected 99-100 %); a station normal does not pay yet (docs/quality.md).

## Latency

Agent task per frame on one CPU thread (JPEG decode, tiling, ONNX Runtime, heat map):
median {latency[median_ms]:.1f} ms, p95 {latency[p95_ms]:.1f} ms over {latency[frames]} frames.

## Limits

- The data is synthetic; the numbers say how well the pipeline learns this generator, not how a
  real line behaves.  Retrain and re-threshold on real frames before any production use.
- The threshold is set on clean validation labels for 1% false rejects; the manifest's
  `false_reject_thresholds` table lets an operator pick another rate (`false_reject_target`).
- Accuracy, balanced accuracy, false rejects and the PR curve use only the natural-rate test
  parts; the extra defective parts enlarge the recall groups and the ROC curve.  Small groups
  (tiny defects, clusters, constrictions) hold few parts, so their recall is noisy.
- The broad conditions cost recall: at 1% false rejects the model finds about 83% of the broad
  test defects (95% targeted), against 96% on the old narrow split.  Remaining false rejects are
  mostly the corners of cut ends (a cut face looks like a crease or a kink), dust specks and
  glints; the validation threshold gives 1.6% false rejects on the broad test split (0.9% on
  validation), 2.3% backlit, 2.6% at 20-30 deg.  Remaining misses are faint and blurred scratches
  running along the tube axis (scratch recall 77%), tiny spots (<6 px) and spots under strong blur.
- The broad generator is still one generator; an independent renderer (`sensors/simulate/tube_alt.py`)
  is the check of how far this carries.
"""

"""Training targets and losses of the detector: Gaussian centre heatmaps, box and landmark regressions at peaks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.faces.runtime.detector import STRIDE

FLIP_ORDER = [1, 0, 2, 4, 3]  # a mirrored left eye is the right eye; likewise the mouth corners


@dataclass
class Targets:
    """A batch's targets: heatmap (N, 1, h, w) and, per face, its cell and regression values."""

    heat: torch.Tensor
    index: torch.Tensor  # (F, 3) batch, row, column of each face's centre cell
    box: torch.Tensor  # (F, 4) centre offset in cells, log width and height in cells
    marks: torch.Tensor  # (F, 10) landmark offsets from the centre in box widths / heights
    has_marks: torch.Tensor  # (F,) bool


def _gaussian(heat: np.ndarray, cx: float, cy: float, sigma: float) -> None:
    rows, cols = heat.shape
    radius = int(3 * sigma) + 1
    ix, iy = int(cx), int(cy)
    y0, y1, x0, x1 = max(0, iy - radius), min(rows, iy + radius + 1), max(0, ix - radius), min(cols, ix + radius + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    # peak 1 exactly on the centre cell, so the focal loss sees one positive per face
    blob = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma))
    heat[y0:y1, x0:x1] = np.maximum(heat[y0:y1, x0:x1], blob)


def make_targets(shape: tuple[int, int], boxes: list[np.ndarray], marks: list[np.ndarray]) -> Targets:
    """Targets for images of ``shape`` (H, W) pixels with per image (F, 4) boxes and (F, 5, 2) landmarks."""
    rows, cols = shape[0] // STRIDE, shape[1] // STRIDE
    heat = np.zeros((len(boxes), 1, rows, cols), np.float32)
    index, box_t, mark_t, has = [], [], [], []
    for n, (frame_boxes, frame_marks) in enumerate(zip(boxes, marks, strict=True)):
        for b, m in zip(frame_boxes, frame_marks, strict=True):
            w, h = max(b[2] - b[0], 1.0), max(b[3] - b[1], 1.0)
            cx, cy = (b[0] + b[2]) / 2 / STRIDE, (b[1] + b[3]) / 2 / STRIDE
            if not (0 <= cx < cols and 0 <= cy < rows):
                continue
            _gaussian(heat[n, 0], cx, cy, max(0.6, 0.1 * min(w, h) / STRIDE))
            index.append((n, int(cy), int(cx)))
            box_t.append((cx - int(cx), cy - int(cy), np.log(w / STRIDE), np.log(h / STRIDE)))
            centre = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
            mark_t.append(np.nan_to_num((m - centre) / np.array([w, h])).reshape(-1))
            has.append(bool(np.all(np.isfinite(m))))
    return Targets(heat=torch.from_numpy(heat), index=torch.tensor(index, dtype=torch.long).reshape(-1, 3),
                   box=torch.tensor(np.array(box_t, np.float32).reshape(-1, 4)),
                   marks=torch.tensor(np.array(mark_t, np.float32).reshape(-1, 10)),
                   has_marks=torch.tensor(has, dtype=torch.bool))


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed and divided by the number of faces."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -torch.log(prob) * (1 - prob) ** 2 * positive
    neg = -torch.log(1 - prob) * prob ** 2 * (1 - target) ** 4 * (1 - positive)
    return (pos.sum() + neg.sum()) / positive.sum().clamp(min=1.0)


def detector_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], targets: Targets,
                  weights: tuple[float, float, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the heatmap focal loss and L1 losses on box and landmarks at the faces' centre cells."""
    heat, box, marks = outputs
    n, r, c = targets.index.unbind(1) if len(targets.index) else (targets.index[:, 0],) * 3
    heat_loss = focal_loss(heat, targets.heat)
    box_loss = torch.nn.functional.l1_loss(box[n, :, r, c], targets.box) if len(n) else heat.sum() * 0
    chosen = targets.has_marks
    mark_loss = (torch.nn.functional.l1_loss(marks[n[chosen], :, r[chosen], c[chosen]], targets.marks[chosen])
                 if int(chosen.sum()) else heat.sum() * 0)
    total = weights[0] * heat_loss + weights[1] * box_loss + weights[2] * mark_loss
    return total, {"heat": heat_loss.item(), "box": box_loss.item(), "marks": mark_loss.item()}

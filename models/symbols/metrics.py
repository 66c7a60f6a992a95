"""Detection metrics: VOC average precision at an IoU per class, by symbol size, and the class confusion table."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (N, 4) boxes (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve (VOC 2010 onwards: all points)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class Matcher:
    """Accumulates pages of ground truth and detections; one greedy match per class and page by score."""

    classes: int
    threshold: float = 0.5
    #: per class: (score, true positive?, size of the matched truth or nan) of every detection
    scored: list[list[tuple[float, bool, float]]] = field(default_factory=list)
    #: per class: sizes (sqrt of area) of every ground-truth object
    truths: list[list[float]] = field(default_factory=list)
    #: truth class x detected class of matches found ignoring the class (IoU >= threshold)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __post_init__(self) -> None:
        self.scored = [[] for _ in range(self.classes)]
        self.truths = [[] for _ in range(self.classes)]
        self.confusion = np.zeros((self.classes, self.classes), np.int64)

    def add(self, true_boxes: np.ndarray, true_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
            scores: np.ndarray) -> None:
        sizes = np.sqrt(np.clip((true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]),
                                0, None))
        for label in range(self.classes):
            truth = true_labels == label
            self.truths[label].extend(sizes[truth].tolist())
            self._match_class(true_boxes[truth], sizes[truth], boxes[labels == label], scores[labels == label],
                              self.scored[label])
        self._confuse(true_boxes, true_labels, boxes, labels)

    def _match_class(self, truth: np.ndarray, sizes: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                     out: list[tuple[float, bool, float]]) -> None:
        taken = np.zeros(len(truth), bool)
        for index in np.argsort(-scores):
            overlaps = iou(boxes[index], truth) if len(truth) else np.zeros(0)
            overlaps[taken] = -1.0
            best = int(overlaps.argmax()) if len(overlaps) else -1
            hit = best >= 0 and overlaps[best] >= self.threshold
            if hit:
                taken[best] = True
            out.append((float(scores[index]), bool(hit), float(sizes[best]) if hit else float("nan")))

    def _confuse(self, truth: np.ndarray, true_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> None:
        for box, label in zip(boxes, labels, strict=True):
            if len(truth):
                overlaps = iou(box, truth)
                best = int(overlaps.argmax())
                if overlaps[best] >= self.threshold:
                    self.confusion[true_labels[best], label] += 1

    def average_precision(self, label: int, size_range: tuple[float, float] | None = None) -> float | None:
        """AP of one class (None without ground truth); with ``size_range`` only truths of that size count,
        and detections matched to truths of other sizes are left out (as COCO's area ranges do)."""
        truths = np.asarray(self.truths[label])
        rows = self.scored[label]
        if size_range is not None:
            low, high = size_range
            truths = truths[(truths >= low) & (truths < high)]
            rows = [r for r in rows if not r[1] or low <= r[2] < high]
        if len(truths) == 0:
            return None
        ordered = sorted(rows, key=lambda r: -r[0])
        hits = np.array([r[1] for r in ordered], bool)
        true_positives = np.cumsum(hits)
        recall = true_positives / len(truths)
        precision = true_positives / np.arange(1, len(hits) + 1)
        return voc_ap(recall, precision) if len(hits) else 0.0

    def mean_ap(self, size_range: tuple[float, float] | None = None) -> float:
        values = [ap for ap in (self.average_precision(c, size_range) for c in range(self.classes))
                  if ap is not None]
        return float(np.mean(values)) if values else float("nan")

"""Detection figures: greedy IoU matching, AP at IoU 0.5, recall by bucket, landmark error, best-F1 threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_MATCH = 0.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9))


@dataclass
class Matched:
    """One frame's detections against its faces: which detection is a hit, which face it found."""

    scores: np.ndarray  # (D,) detection scores, strongest first
    hit: np.ndarray  # (D,) bool: matched a face not matched before
    face_of: np.ndarray  # (D,) index of the matched face or -1
    faces: int


def match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float = IOU_MATCH) -> Matched:
    """Greedy matching, strongest detection first, each face at most once, IoU >= ``iou`` (0.5 as PASCAL VOC)."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    face_of = np.full(len(boxes), -1)
    if len(boxes) and len(truth):
        ious = iou_matrix(boxes, truth)
        free = np.ones(len(truth), bool)
        for i in range(len(boxes)):
            candidates = np.where(free, ious[i], -1.0)
            best = int(np.argmax(candidates))
            if candidates[best] >= iou:
                face_of[i], free[best] = best, False
    return Matched(scores=scores, hit=face_of >= 0, face_of=face_of, faces=len(truth))


def average_precision(matches: Sequence[Matched]) -> float:
    """Area under the all-point interpolated precision-recall curve over all frames (VOC 2010+)."""
    total = sum(m.faces for m in matches)
    if total == 0:
        return float("nan")
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    hits = np.concatenate([m.hit for m in matches] + [np.zeros(0, bool)])
    order = np.argsort(-scores, kind="stable")
    true_pos = np.cumsum(hits[order])
    recall = np.concatenate([[0.0], true_pos / total, [true_pos[-1] / total if len(true_pos) else 0.0]])
    precision = np.concatenate([[1.0], true_pos / np.arange(1, len(order) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * precision[1:]))


def best_f1_threshold(matches: Sequence[Matched], floor: float = 0.05) -> tuple[float, float]:
    """The score threshold with the best F1 over ``matches`` (detections kept at >= it) and that F1."""
    total = sum(m.faces for m in matches)
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    hits = np.concatenate([m.hit for m in matches] + [np.zeros(0, bool)])
    best = (0.5, 0.0)
    for threshold in np.arange(max(floor, 0.05), 0.96, 0.01):
        kept = scores >= threshold
        true_pos = int(np.sum(hits & kept))
        f1 = 2 * true_pos / max(int(np.sum(kept)) + total, 1)
        if f1 > best[1]:
            best = (round(float(threshold), 2), f1)
    return best


def landmark_nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean point distance over the inter-ocular distance (eye centre to eye centre) of one face."""
    ocular = float(np.linalg.norm(truth[0] - truth[1]))
    return float(np.mean(np.linalg.norm(predicted - truth, axis=1)) / max(ocular, 1e-6))

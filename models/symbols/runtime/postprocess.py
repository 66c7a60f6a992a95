"""DWD post-processing without NMS: energy cut, connected components, centre, majority class, box from the size map.

numpy + scipy only (it runs in the agent).  Inputs are one tile's head outputs: energy and class
logits (levels or classes, H, W) and log box sizes (2, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Detections:
    """Symbols found: boxes (N, 4: x0, y0, x1, y1), class indices (N,), confidences (N,), centres (N, 2)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    centres: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros((0, 2), np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    def shifted(self, dx: float, dy: float) -> Detections:
        return Detections(self.boxes + np.array([dx, dy, dx, dy], np.float32), self.labels, self.scores,
                          self.centres + np.array([dx, dy], np.float32))

    def subset(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], self.centres[keep])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        if not parts:
            return Detections.empty()
        return Detections(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("boxes", "labels", "scores", "centres")))


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def detect(energy: np.ndarray, classes: np.ndarray, log_size: np.ndarray, energy_cut: int = 1,
           min_pixels: int = 2) -> Detections:
    """Components of pixels whose most likely energy level is at least ``energy_cut``; each component is
    one symbol: centre = its pixel mean, class = the majority of its pixels' most likely classes, size =
    the mean of the (log) size map over it, confidence = mean probability of that class over the
    component times the component's peak energy share (so strong, agreeing components rank first).
    Only the component pixels (a few percent of a page) are read beyond the energy argmax."""
    level = energy.argmax(axis=0)
    components, count = ndimage.label(level >= energy_cut)
    if count == 0:
        return Detections.empty()
    rows, cols = np.nonzero(components)
    owner = components[rows, cols] - 1
    pixels = np.bincount(owner, minlength=count)
    probability = softmax(classes[:, rows, cols])  # (classes, pixels)
    votes = np.zeros((count, classes.shape[0]), np.int64)
    np.add.at(votes, (owner, probability.argmax(axis=0)), 1)
    label = votes.argmax(axis=1)
    agreement = np.bincount(owner, probability[label[owner], np.arange(len(owner))], count) / pixels
    peak = np.zeros(count, np.float32)
    np.maximum.at(peak, owner, level[rows, cols].astype(np.float32) / (energy.shape[0] - 1))
    centre_x = np.bincount(owner, cols + 0.5, count) / pixels
    centre_y = np.bincount(owner, rows + 0.5, count) / pixels
    height = np.exp(np.bincount(owner, log_size[0, rows, cols], count) / pixels)
    width = np.exp(np.bincount(owner, log_size[1, rows, cols], count) / pixels)
    centres = np.stack([centre_x, centre_y], axis=1).astype(np.float32)
    boxes = np.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2],
                     axis=1).astype(np.float32)
    scores = (agreement * peak).astype(np.float32)
    return Detections(boxes, label.astype(np.int64), scores, centres).subset(pixels >= min_pixels)

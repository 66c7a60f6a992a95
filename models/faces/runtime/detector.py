"""The shipped face detector at run time: any RGB frame in, face boxes with five landmarks and scores out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sensors.errors import RejectedInput

DETECTOR_MANIFEST = Path(__file__).resolve().parents[1] / "detector" / "manifest.yaml"
# 320 x 240 keeps a 640 x 480 camera frame at half size: its smallest faces (24 px) are 12 px here, three
# cells of the stride-4 heatmap, which is still enough to put a peak on; the cost is a quarter of full size.
INPUT_WIDTH, INPUT_HEIGHT = 320, 240
STRIDE = 4
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0
NMS_IOU = 0.5  # two peaks on one large face are merged; faces in the scenes never overlap this much
MIN_SIDE, MAX_SIDE = 32, 4096


@dataclass(frozen=True)
class DetectedFace:
    """One face: box (x0, y0, x1, y1) and five landmarks in frame pixels, score in 0..1."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth, right mouth (align.ARCFACE_TEMPLATE)
    score: float


def letterbox(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """``frame`` scaled to fit INPUT_WIDTH x INPUT_HEIGHT, placed top-left on black; returns it and the scale."""
    height, width = frame.shape[:2]
    scale = min(INPUT_WIDTH / width, INPUT_HEIGHT / height)
    size = (max(1, min(INPUT_WIDTH, round(width * scale))), max(1, min(INPUT_HEIGHT, round(height * scale))))
    canvas = np.zeros((INPUT_HEIGHT, INPUT_WIDTH, 3), np.uint8)
    resized = frame if size == (width, height) else np.asarray(
        Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
    canvas[: size[1], : size[0]] = resized
    return canvas, scale


def preprocess(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32, normalised as in training."""
    return np.ascontiguousarray(((images.astype(np.float32) - PIXEL_MEAN) / PIXEL_SCALE).transpose(0, 3, 1, 2))


def _peaks(heat: np.ndarray, threshold: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of 3 x 3 local maxima at or above ``threshold``, the ``limit`` strongest first."""
    padded = np.pad(heat, 1, constant_values=-1.0)
    rows, cols = heat.shape
    pooled = np.max([padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)], axis=0)
    ys, xs = np.nonzero((heat >= pooled) & (heat >= threshold))
    order = np.argsort(-heat[ys, xs], kind="stable")[:limit]
    return ys[order], xs[order]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def decode(heat: np.ndarray, box: np.ndarray, marks: np.ndarray, threshold: float,
           limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's head outputs -> (K, 4) boxes, (K, 5, 2) landmarks in input pixels and (K,) scores, NMS'd.

    ``heat`` (h, w) in 0..1; ``box`` (4, h, w): centre offset in cells, log width and height in cells;
    ``marks`` (10, h, w): landmark offsets from the centre in box widths (x) and heights (y).
    """
    ys, xs = _peaks(heat, threshold, 4 * limit)
    cx, cy = (xs + box[0, ys, xs]) * STRIDE, (ys + box[1, ys, xs]) * STRIDE
    w = np.exp(np.clip(box[2, ys, xs], -5, 6)) * STRIDE
    h = np.exp(np.clip(box[3, ys, xs], -5, 6)) * STRIDE
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float64)
    offsets = marks[:, ys, xs].T.reshape(-1, 5, 2)
    landmarks = np.stack([cx[:, None] + offsets[..., 0] * w[:, None],
                          cy[:, None] + offsets[..., 1] * h[:, None]], -1).astype(np.float64)
    scores = heat[ys, xs].astype(np.float64)
    keep: list[int] = []
    for i in range(len(scores)):
        if len(keep) >= limit:
            break
        if not keep or np.all(_iou(boxes[i], boxes[keep]) < NMS_IOU):
            keep.append(i)
    return boxes[keep].reshape(-1, 4), landmarks[keep].reshape(-1, 5, 2), scores[keep]


def check_frame(frame: Any) -> np.ndarray:
    """``frame`` as an (H, W, 3) uint8 array, or RejectedInput saying what is wrong with it."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise RejectedInput(f"face detector wants an (H, W, 3) uint8 RGB frame, got {described}")
    if not (min(frame.shape[:2]) >= MIN_SIDE and max(frame.shape[:2]) <= MAX_SIDE):
        raise RejectedInput(f"face detector takes frames {MIN_SIDE}..{MAX_SIDE} px a side, got {frame.shape[:2]}")
    return frame


class FaceDetector:
    """The detector of ``manifest`` (the shipped one by default), loaded with the given backend settings, or an
    already loaded ``model`` (the agent loads it with the configured backend)."""

    def __init__(self, manifest: Path = DETECTOR_MANIFEST, backend: Any = None, score_threshold: float | None = None,
                 max_faces: int = 50, model: Any = None) -> None:
        if model is None:
            from models.runtime import load_model  # onnxruntime only when a detector is made

            model = load_model(manifest, backend)
        self.model = model
        self.input_name = self.model.manifest.inputs[0].name
        chosen = self.model.manifest.thresholds.get("score", 0.5)
        self.score_threshold = float(chosen if score_threshold is None else score_threshold)
        self.max_faces = max_faces

    def detect(self, frame: np.ndarray) -> list[DetectedFace]:
        """Faces in an (H, W, 3) uint8 RGB frame, strongest first, at most ``max_faces``."""
        frame = check_frame(frame)
        image, scale = letterbox(frame)
        heat, box, marks = self.model.run({self.input_name: preprocess(image[None])})[:3]
        boxes, landmarks, scores = decode(heat[0, 0], box[0], marks[0], self.score_threshold, self.max_faces)
        height, width = frame.shape[:2]
        boxes = boxes / scale
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        landmarks = landmarks / scale
        return [DetectedFace(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), landmarks=m, score=float(s))
                for b, m, s in zip(boxes, landmarks, scores, strict=True)]

    def close(self) -> None:
        self.model.close()

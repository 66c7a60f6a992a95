"""The shipped face embedder at run time: aligned 112 x 112 RGB crops in, L2-normalised embeddings out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.faces.runtime.align import ARCFACE_TEMPLATE, CROP_SIZE, align_face
from sensors.errors import ModelError, RejectedInput

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yaml"
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0  # as the manifest's preprocessing says (models.faces.network.preprocess)


def preprocess(crops: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB crops -> (N, 3, 112, 112) float32, normalised as in training."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise RejectedInput(f"face crops must be (N, {CROP_SIZE}, {CROP_SIZE}, 3) RGB, got {crops.shape}")
    scaled = (crops.astype(np.float32) - PIXEL_MEAN) / PIXEL_SCALE
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def alignment_template(preprocessing: dict[str, Any]) -> np.ndarray:
    """Where an embedder wants the five landmarks in its 112 x 112 crop: the manifest's ``template`` (5 x 2
    pixels), else the standard ArcFace template that InsightFace-style models expect."""
    template = preprocessing.get("template")
    if template is None:
        return ARCFACE_TEMPLATE
    try:
        points = np.asarray(template, dtype=np.float64)
    except (TypeError, ValueError):
        points = np.zeros(0)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ModelError(f"the embedder manifest's preprocessing.template must be 5 [x, y] points, got {template!r}")
    return points


class FaceEmbedder:
    """The embedder of ``manifest`` (the shipped one by default), loaded with the given backend settings, or an
    already loaded ``model`` (the agent loads it with the configured backend)."""

    def __init__(self, manifest: Path = MANIFEST, backend: Any = None, model: Any = None) -> None:
        if model is None:
            from models.runtime import load_model  # onnxruntime only when an embedder is made

            model = load_model(manifest, backend)
        self.model = model
        self.input_name = self.model.manifest.inputs[0].name
        self.template = alignment_template(self.model.manifest.preprocessing)
        self.threshold = float(self.model.manifest.thresholds.get("same_person_similarity", 0.0))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding per aligned crop."""
        (embeddings,) = self.model.run({self.input_name: preprocess(crops)})[:1]
        embeddings = np.asarray(embeddings, dtype=np.float64)
        return np.asarray(embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12))

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The crop of the face with these five landmarks, aligned as this embedder was trained."""
        return align_face(image, landmarks, CROP_SIZE, self.template)

    def close(self) -> None:
        self.model.close()

"""The shipped face embedder at run time: aligned 112 x 112 RGB crops in, L2-normalised embeddings out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.faces.runtime.align import CROP_SIZE
from sensors.errors import RejectedInput

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yaml"
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0  # as the manifest's preprocessing says (models.faces.network.preprocess)


def preprocess(crops: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB crops -> (N, 3, 112, 112) float32, normalised as in training."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise RejectedInput(f"face crops must be (N, {CROP_SIZE}, {CROP_SIZE}, 3) RGB, got {crops.shape}")
    scaled = (crops.astype(np.float32) - PIXEL_MEAN) / PIXEL_SCALE
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


class FaceEmbedder:
    """The embedder of ``manifest`` (the shipped one by default), loaded with the given backend settings."""

    def __init__(self, manifest: Path = MANIFEST, backend: Any = None) -> None:
        from models.runtime import load_model  # onnxruntime only when an embedder is made

        self.model = load_model(manifest, backend)
        self.input_name = self.model.manifest.inputs[0].name
        self.threshold = float(self.model.manifest.thresholds.get("same_person_similarity", 0.0))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding per aligned crop."""
        (embeddings,) = self.model.run({self.input_name: preprocess(crops)})[:1]
        embeddings = np.asarray(embeddings, dtype=np.float64)
        return np.asarray(embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12))

    def close(self) -> None:
        self.model.close()

"""Speaker embeddings of audio: log-mel segments through the model, L2-normalised, averaged per turn.

The model contract (the shipped ``models/speakers/model.onnx``): input ``mel`` float32 [batch, 40, 128]
(segments of :func:`features.log_mel`), output ``embedding`` float32 [batch, D], not normalised.  Each
segment's embedding is L2-normalised; a turn's embedding is the mean of its segments', normalised again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.speakers.runtime.features import log_mel, segments

#: (n, 40, 128) log-mel segments -> (n, D) raw embeddings
Embed = Callable[[np.ndarray], np.ndarray]
#: segments per model call (bounds the memory of one call)
BATCH = 64
#: by default segments overlap by half: one every 20 frames (0.2 s)
SEGMENT_HOP_S = 0.2


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis (zero vectors stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def segment_embeddings(audio: np.ndarray, embed: Embed, hop_s: float = SEGMENT_HOP_S) -> np.ndarray:
    """16 kHz mono audio -> (segments, D) normalised embeddings, one per 0.4 s segment every ``hop_s``."""
    mel_segments = segments(log_mel(audio), hop=max(1, round(hop_s * 100)))
    if not len(mel_segments):
        return np.zeros((0, 0), dtype=np.float32)
    parts = [np.asarray(embed(mel_segments[start : start + BATCH]), dtype=np.float32)
             for start in range(0, len(mel_segments), BATCH)]
    raw = np.concatenate(parts)
    if not np.all(np.isfinite(raw)):
        raise ValueError("the embedding model returned non-finite values")
    return normalise(raw)


def mean_embedding(vectors: np.ndarray) -> np.ndarray:
    """The normalised mean of normalised embeddings (a turn's, or a cluster's centroid)."""
    return normalise(np.asarray(vectors, dtype=np.float32).mean(axis=0))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of normalised vectors, broadcast over leading axes."""
    return np.asarray(1.0 - np.sum(a * b, axis=-1), dtype=np.float32)

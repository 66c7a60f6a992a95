"""Utterance embeddings, complete-linkage clustering, the misclassification rate and threshold choice."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import pdist

from models.speakers.runtime import features

EmbedSegments = Callable[[np.ndarray], np.ndarray]  # (n, 40, 128) log-mel -> (n, D) embeddings
STRETCH_FRAMES = 150  # the live task's ~1.5 s stretches between which a speaker change is tested


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def mean_embedding(embed: EmbedSegments, mel: np.ndarray) -> np.ndarray:
    """One utterance's embedding: the mean of its unit-length segment embeddings, as the live runtime does."""
    segs = features.segments(mel)
    if len(segs) == 0:  # shorter than one segment: pad with its own last frames' silence floor
        segs = features.segments(np.pad(mel, ((0, features.SEGMENT_FRAMES - len(mel)), (0, 0)), mode="edge"))
    return unit(embed(segs)).mean(axis=0)


def utterance_embeddings(embed: EmbedSegments, mels: Sequence[np.ndarray]) -> np.ndarray:
    """(utterances, D) mean embeddings; segments of all utterances go through the network in one call."""
    segs = [features.segments(mel) for mel in mels]
    if any(len(s) == 0 for s in segs):
        return np.stack([mean_embedding(embed, mel) for mel in mels])
    flat = unit(embed(np.concatenate(segs)))
    bounds = np.cumsum([0] + [len(s) for s in segs])
    return np.stack([flat[start:end].mean(axis=0) for start, end in itertools.pairwise(bounds)])


def complete_linkage(embeddings: np.ndarray) -> np.ndarray:
    """The scipy linkage matrix of complete-linkage clustering under cosine distance."""
    return linkage(pdist(embeddings, metric="cosine"), method="complete")


def clusters_at_cut(tree: np.ndarray, cut: float) -> np.ndarray:
    return fcluster(tree, t=cut, criterion="distance")


def clusters_of_count(tree: np.ndarray, count: int) -> np.ndarray:
    return fcluster(tree, t=count, criterion="maxclust")


def misclassification_rate(speakers: Sequence[str], clusters: np.ndarray) -> float:
    """Share of utterances outside their speaker's cluster.

    Each speaker owns at most one cluster and each cluster at most one speaker (the one-to-one matching
    that keeps the most utterances in place); everything else is misclassified, so both splitting a
    speaker and merging two speakers count.
    """
    names = sorted(set(speakers))
    labels = sorted(set(clusters.tolist()))
    table = np.zeros((len(names), len(labels)), dtype=np.int64)
    for speaker, cluster in zip(speakers, clusters.tolist(), strict=True):
        table[names.index(speaker), labels.index(cluster)] += 1
    rows, cols = linear_sum_assignment(-table)
    return 1.0 - table[rows, cols].sum() / len(speakers)


def best_threshold(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """Distance cut separating same-speaker (below) from different-speaker (above) distances.

    Returns (threshold, balanced error rate): the middle of the widest run of candidate cuts with the
    lowest mean of the two error rates (balanced, because different-speaker pairs far outnumber
    same-speaker ones), so a clean separation gives the midpoint of the gap rather than its edge.
    """
    values = np.unique(np.concatenate([same, different]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    errors = np.array([((same > cut).mean() + (different <= cut).mean()) / 2 for cut in candidates])
    best = np.flatnonzero(errors <= errors.min() + 1e-12)
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(runs, key=lambda run: candidates[run[-1]] - candidates[run[0]])
    cut = float((candidates[widest[0]] + candidates[widest[-1]]) / 2)
    return cut, float(errors.min())


def choose_cut(embeddings: np.ndarray, speakers: Sequence[str]) -> tuple[float, float]:
    """The complete-linkage cut with the lowest MR (middle of the best range of merge heights) and that MR."""
    tree = complete_linkage(embeddings)
    heights = np.concatenate([[0.0], np.sort(tree[:, 2]), [2.0]])
    cuts = (heights[:-1] + heights[1:]) / 2
    rates = np.array([misclassification_rate(speakers, clusters_at_cut(tree, cut)) for cut in cuts])
    best = np.flatnonzero(rates == rates.min())
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(runs, key=lambda run: heights[run[-1] + 1] - heights[run[0]])
    low, high = heights[widest[0]], heights[widest[-1] + 1]
    return float((low + high) / 2), float(rates.min())


def centroid_distances(embeddings: np.ndarray, speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances from each utterance to its own speaker's centroid (without it) and to the nearest
    other speaker's centroid: what the live task's on-line assignment compares with ``assign_distance``."""
    names = sorted(set(speakers))
    owner = np.array([names.index(s) for s in speakers])
    centroids = unit(np.stack([embeddings[owner == k].mean(axis=0) for k in range(len(names))]))
    own, other = [], []
    for i, vector in enumerate(unit(embeddings)):
        mates = (owner == owner[i]) & (np.arange(len(owner)) != i)
        if mates.any():
            own.append(1.0 - float(vector @ unit(embeddings[mates].mean(axis=0))))
        distances = 1.0 - centroids @ vector
        distances[owner[i]] = np.inf
        other.append(float(distances.min()))
    return np.array(own), np.array(other)


def stretch_embeddings(embed: EmbedSegments, mel: np.ndarray) -> list[np.ndarray]:
    """Mean embeddings of the consecutive ~1.5 s stretches of one utterance (a shorter tail is dropped
    unless it is the only stretch)."""
    stretches = [mel[start : start + STRETCH_FRAMES] for start in range(0, len(mel), STRETCH_FRAMES)]
    kept = [s for s in stretches if len(s) >= STRETCH_FRAMES] or stretches[:1]
    return [mean_embedding(embed, s) for s in kept]


def change_distances(embed: EmbedSegments, mels: Sequence[np.ndarray],
                     speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distances between consecutive stretches: same speaker (within and across a speaker's utterances)
    and different speakers (the last stretch of one utterance and the first of the next speaker's)."""
    per_utterance = [stretch_embeddings(embed, mel) for mel in mels]
    same: list[float] = []
    different: list[float] = []
    for i, stretches in enumerate(per_utterance):
        same += [1.0 - float(unit(a) @ unit(b)) for a, b in itertools.pairwise(stretches)]
        for j in range(len(per_utterance)):
            if j != i:
                target = same if speakers[i] == speakers[j] else different
                target.append(1.0 - float(unit(stretches[-1]) @ unit(per_utterance[j][0])))
    return np.array(same), np.array(different)

"""Face verification and identification figures: RFW-style 10-fold accuracy, ROC, FMR, rank-1."""

from __future__ import annotations

import numpy as np


def cosine_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair (rows ``first[i]`` and ``second[i]`` of unit or raw embeddings)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", unit[first], unit[second])


def make_pairs(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator,
               per_group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half genuine, half impostor pairs within each group (as RFW: impostors share the group).

    Returns (first, second, same) index arrays; no pair is drawn twice (fewer when a group has too few).
    """
    firsts, seconds, sames = [], [], []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        rows, columns = np.triu_indices(len(members), k=1)
        a, b = members[rows], members[columns]
        genuine = np.flatnonzero(labels[a] == labels[b])
        impostor = np.flatnonzero(labels[a] != labels[b])
        for candidates, same in ((genuine, True), (impostor, False)):
            chosen = np.sort(rng.choice(candidates, min(per_group // 2, len(candidates)), replace=False))
            firsts += a[chosen].tolist()
            seconds += b[chosen].tolist()
            sames += [same] * len(chosen)
    return np.array(firsts, int), np.array(seconds, int), np.array(sames, bool)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The similarity threshold (accept when score >= it) with the highest accuracy, and that accuracy."""
    candidates = np.unique(scores)
    if len(candidates) == 0:
        return 0.0, 0.0
    # midpoints between neighbouring scores, plus both ends, so every split of the sorted scores is tried
    cuts = np.concatenate([[candidates[0] - 1e-6], (candidates[1:] + candidates[:-1]) / 2, [candidates[-1] + 1e-6]])
    accepted = scores[None, :] >= cuts[:, None]
    accuracy = (accepted == same[None, :]).mean(axis=1)
    best = int(np.argmax(accuracy))
    return float(cuts[best]), float(accuracy[best])


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10,
                      seed: int = 0) -> tuple[float, float, float]:
    """LFW/RFW protocol: per fold, the threshold best on the other folds, accuracy on this one.

    Returns (mean accuracy, standard deviation over folds, mean threshold).
    """
    order = np.random.default_rng(seed).permutation(len(scores))
    accuracies, thresholds = [], []
    for held in np.array_split(order, folds):
        rest = np.setdiff1d(order, held)
        threshold, _ = best_threshold(scores[rest], same[rest])
        accuracies.append(float(((scores[held] >= threshold) == same[held]).mean()))
        thresholds.append(threshold)
    return float(np.mean(accuracies)), float(np.std(accuracies)), float(np.mean(thresholds))


def match_rates(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    """False match rate (impostors accepted) and false non-match rate (genuine rejected) at ``threshold``."""
    return {"fmr": float((scores[~same] >= threshold).mean()) if (~same).any() else 0.0,
            "fnmr": float((scores[same] < threshold).mean()) if same.any() else 0.0}


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false match rate, true match rate) over all thresholds, from the strictest to the loosest."""
    order = np.argsort(-scores, kind="stable")
    hits = same[order]
    tmr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fmr = np.concatenate([[0.0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    return fmr, tmr


def gallery_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First picture of each identity as its gallery entry, all others as probes (index arrays)."""
    _, first = np.unique(labels, return_index=True)
    probes = np.setdiff1d(np.arange(len(labels)), first)
    return first, probes


def rank1(embeddings: np.ndarray, labels: np.ndarray, gallery: np.ndarray, probes: np.ndarray) -> float:
    """Share of probes whose most similar gallery entry is their own identity."""
    if len(probes) == 0:
        return 0.0
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(unit[probes] @ unit[gallery].T, axis=1)
    return float((labels[gallery][nearest] == labels[probes]).mean())


def tmr_at_fmr(scores: np.ndarray, same: np.ndarray, fmr_limit: float) -> float:
    """The highest true match rate of any threshold whose false match rate is at most ``fmr_limit``."""
    fmr, tmr = roc_curve(scores, same)
    return float(tmr[fmr <= fmr_limit].max())

"""The model card's pictures: learning curves, the embedding map and the dendrogram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on the training machine or in CI
import matplotlib.pyplot as plt
import numpy as np
from scipy.cluster.hierarchy import dendrogram


def learning_curves(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Training loss and validation MR (true N, best cut) against steps, one colour per loss variant."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for loss, summary in summaries.items():
        history = summary["history"]
        axes[0].plot(history["step"], history["train_loss"], label=loss)
        axes[1].plot(history["step"], np.array(history["val_mr_true_k"]) * 100, label=loss)
        axes[2].plot(history["step"], np.array(history["val_mr_best_cut"]) * 100, label=loss)
    for axis, title in zip(axes, ["training loss (own scale per loss)", "validation MR at true N (%)",
                                  "validation MR at its best cut (%)"], strict=True):
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def embedding_map(embeddings: np.ndarray, speakers: Sequence[str], path: Path, title: str) -> Path:
    """2-D PCA of unit-length utterance embeddings, one colour and marker per speaker."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    names = sorted(set(speakers))
    colours = plt.get_cmap("tab20")
    markers = "os^vD<>Pp*"
    figure, axis = plt.subplots(figsize=(8, 7))
    for k, name in enumerate(names):
        chosen = np.array([s == name for s in speakers])
        axis.scatter(points[chosen, 0], points[chosen, 1], color=colours(k % 20), marker=markers[k // 20 % 10],
                     s=40, edgecolors="black", linewidths=0.3)
        axis.plot(points[chosen, 0], points[chosen, 1], color=colours(k % 20), linewidth=0.6, alpha=0.6)
    axis.set_title(title)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def dendrogram_plot(tree: np.ndarray, speakers: Sequence[str], cut: float, path: Path, title: str) -> Path:
    """The complete-linkage dendrogram with leaves named by speaker and the chosen cut drawn across."""
    short = [name.split(":")[1] + ":" + name.split(":")[2] for name in speakers]
    figure, axis = plt.subplots(figsize=(16, 6))
    dendrogram(tree, labels=short, ax=axis, leaf_font_size=6, color_threshold=cut)
    axis.axhline(cut, color="red", linestyle="--", linewidth=1, label=f"distance_cut {cut:.3f}")
    axis.set_ylabel("cosine distance (complete linkage)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""The face model card's pictures: learning curves, per-group ROC, the worst verification pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on the training machine or in CI
import matplotlib.pyplot as plt
import numpy as np


def learning_curves(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Training loss and validation pair accuracy / rank-1 against steps, one colour per variant."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, summary in summaries.items():
        history = summary["history"]
        axes[0].plot(history["step"], history["train_loss"], label=name)
        axes[1].plot(history["step"], np.array(history["val_accuracy"]) * 100, label=name)
        axes[2].plot(history["step"], np.array(history["val_rank1"]) * 100, label=name)
    for axis, title in zip(axes, ["training loss (ArcFace, margin warm-up)", "validation pair accuracy (%)",
                                  "validation rank-1 (%)"], strict=True):
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def group_rocs(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """One panel per model / test set, one ROC line per group (log false-match axis)."""
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.2), squeeze=False)
    for axis, (title, per_group) in zip(axes[0], curves.items(), strict=True):
        for group, (fmr, tmr) in per_group.items():
            axis.plot(np.maximum(fmr, 1e-4), tmr, label=group)
        axis.set_xscale("log")
        axis.set_xlim(1e-3, 1)
        axis.set_title(title)
        axis.set_xlabel("false match rate")
        axis.set_ylabel("true match rate")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def worst_pairs(images: np.ndarray, pairs: list[tuple[int, int, float, bool]], path: Path) -> Path:
    """Side-by-side crops of the worst pairs: impostors scored highest and genuine pairs scored lowest."""
    figure, axes = plt.subplots(2, len(pairs), figsize=(1.6 * len(pairs), 3.8), squeeze=False)
    for column, (a, b, score, same) in enumerate(pairs):
        for row, index in enumerate((a, b)):
            axes[row][column].imshow(images[index])
            axes[row][column].axis("off")
        axes[0][column].set_title(f"{'same' if same else 'diff'} {score:.2f}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def samples(banks: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, identities: int = 8,
            per_identity: int = 4) -> Path:
    """One row per identity (pictures side by side), one block per generator: what the model is shown."""
    figure, axes = plt.subplots(identities, per_identity * len(banks), figsize=(1.3 * per_identity * len(banks),
                                                                                1.3 * identities), squeeze=False)
    for block, (title, (images, labels)) in enumerate(banks.items()):
        for row in range(identities):
            own = np.flatnonzero(labels == row)[:per_identity]
            for column, index in enumerate(own):
                axis = axes[row][block * per_identity + column]
                axis.imshow(images[index])
                axis.axis("off")
        axes[0][block * per_identity].set_title(title, fontsize=9, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

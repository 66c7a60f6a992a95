"""Pictures for the quality model card: learning curves, ROC/PR curves, failure gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def learning_curves(summaries: list[dict[str, Any]], pretrain: list[dict[str, float]], path: Path) -> Path:
    """Train/validation loss and validation crop accuracy per variant, plus the pretraining run."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for summary in summaries:
        steps = [h["step"] for h in summary["history"]]
        axes[0].plot(steps, [h["train_loss"] for h in summary["history"]], label=f"{summary['variant']} train")
        axes[0].plot(steps, [h["val_loss"] for h in summary["history"]], "--", label=f"{summary['variant']} val")
        axes[1].plot(steps, [h["val_accuracy"] for h in summary["history"]], label=summary["variant"])
    axes[0].set(title="loss (weighted BCE, cells + tile)", xlabel="step", yscale="log")
    axes[1].set(title="validation crop accuracy (tile > 0.5)", xlabel="step")
    if pretrain:
        pre_steps = np.array([h["step"] for h in pretrain])
        window = max(len(pre_steps) // 50, 1)
        kernel = np.ones(window) / window
        axes[2].plot(pre_steps[window - 1 :], np.convolve([h["loss"] for h in pretrain], kernel, "valid"), label="loss")
        axes[2].plot(pre_steps[window - 1 :], np.convolve([h["accuracy"] for h in pretrain], kernel, "valid"),
                     label="accuracy")
    axes[2].set(title="pretraining: synthetic shape classes", xlabel="step")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roc_pr(curves: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """ROC (all held-out parts) and precision-recall (natural defect rate only) curves of each variant."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, data in curves.items():
        fpr, tpr, _ = roc_curve(data["truth_all"], data["score_all"])
        precision, recall, _ = precision_recall_curve(data["truth"], data["score"])
        roc_axis.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.4f})")
        pr_axis.plot(recall, precision, label=f"{name} (AUC {auc(recall, precision):.3f})")
    roc_axis.axvline(0.01, color="grey", ls=":", label="1% false rejects")
    roc_axis.set(title="ROC (held-out parts incl. extra defective)", xlabel="false-reject rate", ylabel="defect recall",
                 xscale="log", xlim=(1e-4, 1))
    pr_axis.set(title="precision-recall (held-out, natural 3% rate)", xlabel="recall", ylabel="precision")
    for axis in (roc_axis, pr_axis):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def gallery(cases: list[dict[str, Any]], path: Path, columns: int = 6) -> Path:
    """Failure cases: crops with the true defect box (green) and the heat-map peak (red cross, if in view)."""
    rows = max(-(-len(cases) // columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, case in zip(axes.ravel(), cases, strict=False):
        axis.imshow(case["crop"], cmap="gray", vmin=0, vmax=255)
        for x0, y0, x1, y1 in case["boxes"]:
            axis.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
        size = case["crop"].shape
        if 0 <= case["peak"][0] < size[1] and 0 <= case["peak"][1] < size[0]:
            axis.plot(*case["peak"], "r+", ms=10)
        axis.set(xlim=(-0.5, size[1] - 0.5), ylim=(size[0] - 0.5, -0.5))
        axis.set_title(case["title"], fontsize=7)
    if not cases:
        axes[0, 0].text(0.5, 0.5, "no failures", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

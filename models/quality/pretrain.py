"""Pretraining on a related synthetic task (no hub weights can be downloaded here).

The backbone learns to tell which primitive a noisy, unevenly lit 64x64 patch holds:
nothing, a thin line, a disc, a ring, a blob cluster or a step edge.  These are the
low-level cues of the defect task (thin lines, rims, spots, walls) without the tube
renderer, so the pretraining data is not the target data in disguise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.quality.network import NetworkConfig, ShapeNet

SHAPES = ("none", "line", "disc", "ring", "blobs", "edge")


def shape_batch(rng: np.random.Generator, size: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(patches (B, 1, T, T) float32 roughly normalised, class indices (B,))."""
    ys, xs = np.mgrid[0:tile, 0:tile].astype(np.float32)
    labels = rng.integers(len(SHAPES), size=size)
    patches = np.empty((size, 1, tile, tile), dtype=np.float32)
    for i, label in enumerate(labels):
        level = rng.uniform(-1.0, 1.5)
        gy, gx = rng.uniform(-0.5, 0.5, 2)
        base = level + gy * (ys / tile - 0.5) + gx * (xs / tile - 0.5)
        cy, cx = rng.uniform(12, tile - 12, 2)
        contrast = rng.uniform(0.3, 1.5) * rng.choice([-1, 1])
        base += contrast * primitive(rng, SHAPES[label], ys - cy, xs - cx)
        patches[i, 0] = base + rng.standard_normal((tile, tile)).astype(np.float32) * rng.uniform(0.02, 0.15)
    return patches, labels


def primitive(rng: np.random.Generator, shape: str, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Unit-contrast drawing of one primitive centred at the origin of (dy, dx)."""
    angle = rng.uniform(0, np.pi)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    along = dx * np.cos(angle) + dy * np.sin(angle)
    radius = np.sqrt(dy * dy + dx * dx)
    if shape == "line":
        width, half = rng.uniform(0.6, 2.0), rng.uniform(3, 30)
        return np.exp(-(across**2) / (2 * width**2)) * (np.abs(along) < half)
    if shape == "disc":
        return 1.0 / (1 + np.exp((radius - rng.uniform(1.0, 8.0)) * 2))
    if shape == "ring":
        r0, w = rng.uniform(2.0, 9.0), rng.uniform(0.6, 1.5)
        return np.exp(-(((radius - r0) / w) ** 2))
    if shape == "blobs":
        out = np.zeros_like(dy)
        for _ in range(rng.integers(2, 6)):
            oy, ox, s = rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(0.7, 3.0)
            out = np.maximum(out, np.exp(-((dy - oy) ** 2 + (dx - ox) ** 2) / (2 * s * s)))
        return out
    if shape == "edge":
        return 1.0 / (1 + np.exp(-across * rng.uniform(0.5, 3.0)))
    return np.zeros_like(dy)


def pretrain_backbone(config: NetworkConfig, steps: int, batch: int, lr: float, tile: int,
                      seed: int) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train ShapeNet; return its backbone weights and a loss/accuracy history."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ShapeNet(config, len(SHAPES))
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, float]] = []
    net.train()
    for step in range(1, steps + 1):
        x, y = shape_batch(rng, batch, tile)
        logits = net(torch.from_numpy(x))
        target = torch.from_numpy(y)
        loss = loss_fn(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        accuracy = float((logits.argmax(1) == target).float().mean())
        history.append({"step": step, "loss": float(loss.detach()), "accuracy": accuracy})
    return net.backbone.state_dict(), history

"""Train the vibration LSTM autoencoder on healthy stretches of a simulated fleet and export it to ONNX.

    python -m models.vibration.train --config models/vibration/train.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.vibration.network import LstmAutoencoder, NetworkConfig


@dataclass
class TrainConfig:
    """Optimiser settings of one training run."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    validation_share: float = 0.2
    #: std of Gaussian noise added to inputs only (denoising), so the net learns the healthy manifold
    input_noise: float = 0.05


@dataclass
class History:
    """Per-epoch losses, for the learning curves."""

    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)


def split(sequences: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle sequences and split off ``share`` of them for validation."""
    order = rng.permutation(len(sequences))
    cut = round(len(sequences) * (1.0 - share))
    return sequences[order[:cut]], sequences[order[cut:]]


def mean_loss(model: LstmAutoencoder, sequences: torch.Tensor, batch_size: int) -> float:
    """Mean reconstruction error over ``sequences`` without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            _, error = model(sequences[start:start + batch_size])
            total += float(error.sum())
    return total / max(len(sequences), 1)


def train_autoencoder(
    sequences: np.ndarray,
    network: NetworkConfig,
    config: TrainConfig,
    seed: int,
    log: Any = print,
) -> tuple[LstmAutoencoder, History]:
    """Fit an autoencoder to (n, time, features) healthy sequences; returns the best-validation model."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_part, validation_part = split(sequences.astype(np.float32), config.validation_share, rng)
    train_x, validation_x = torch.from_numpy(train_part), torch.from_numpy(validation_part)
    model = LstmAutoencoder(network)
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    history = History()
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            target = train_x[order[start:start + config.batch_size]]
            noisy = target + config.input_noise * torch.randn(target.shape, generator=generator)
            reconstruction, _ = model(noisy)
            loss = ((reconstruction - target) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(target)
        history.train.append(total / max(len(train_x), 1))
        history.validation.append(mean_loss(model, validation_x, config.batch_size) if len(validation_x) else
                                  history.train[-1])
        log(f"epoch {epoch + 1:3d}/{config.epochs}  train {history.train[-1]:.5f}  "
            f"validation {history.validation[-1]:.5f}")
        if best is None or history.validation[-1] < best[0]:
            best = (history.validation[-1], {k: v.clone() for k, v in model.state_dict().items()})
    if best is not None:
        model.load_state_dict(best[1])
    return model.eval(), history


def plot_learning_curves(history: History, path: Path) -> Path:
    """Save train and validation loss per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(history.train) + 1)
    axes.plot(epochs, history.train, label="train (denoising)")
    axes.plot(epochs, history.validation, label="validation")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean squared reconstruction error")
    axes.set_title("LSTM autoencoder on healthy feature sequences")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""Train the vibration LSTM autoencoder on healthy stretches of a simulated fleet and export it to ONNX.

    python -m models.vibration.train --config models/vibration/train.yaml
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from models.runtime import Manifest, write_manifest
from models.runtime.manifest import TensorSpec
from models.vibration.data import FleetConfig, MachineData, fleet_data
from models.vibration.export import INPUT_NAME, OUTPUT_NAMES, check_export, export_onnx
from models.vibration.network import LstmAutoencoder, NetworkConfig
from models.vibration.runtime.monitor import MonitorSettings, Normaliser

#: monitor settings recorded in the manifest's thresholds: the alarm logic the evaluation used
THRESHOLD_SETTINGS = ("threshold_quantile", "threshold_margin", "ewma_alpha", "k", "n", "clear_ratio",
                      "clear_windows", "baseline_windows", "scale_floor")


@dataclass
class TrainConfig:
    """Optimiser settings of one training run."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    #: std of Gaussian noise added to inputs only (denoising), so the net learns the healthy manifold
    input_noise: float = 0.05


@dataclass
class History:
    """Per-epoch losses, for the learning curves."""

    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)


def mean_loss(model: LstmAutoencoder, sequences: torch.Tensor, batch_size: int) -> float:
    """Mean reconstruction error over ``sequences`` without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            _, step_error = model(sequences[start:start + batch_size])
            total += float(step_error.mean(dim=1).sum())
    return total / max(len(sequences), 1)


def train_autoencoder(
    train: np.ndarray,
    validation: np.ndarray,
    network: NetworkConfig,
    config: TrainConfig,
    seed: int,
    log: Callable[[str], object] = print,
) -> tuple[LstmAutoencoder, History]:
    """Fit an autoencoder to (n, time, features) healthy sequences; returns the best-validation model."""
    torch.manual_seed(seed)
    train_x = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
    validation_x = torch.from_numpy(np.ascontiguousarray(validation, dtype=np.float32))
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
            loss = ((reconstruction - model.clip(target)) ** 2).mean()
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



@dataclass
class RunConfig:
    """Everything ``train.yaml`` sets: data, network, optimiser, output."""

    seed: int
    fleet: FleetConfig
    sequence_length: int
    network: dict[str, int]
    training: TrainConfig
    #: the last machines of the fleet, whose sequences give the validation loss only
    validation_machines: int
    output_dir: Path
    name: str
    version: str
    cache_dir: Path | None = None
    #: MonitorSettings overrides for the normalisation the network is trained on (e.g. scale_floor)
    monitor: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """Read the YAML file; lists become the tuples the dataclasses expect."""
        raw = yaml.safe_load(path.read_text())
        fleet: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                                 for key, value in raw.pop("fleet").items()}
        cache = raw.pop("cache_dir", None)
        return cls(fleet=FleetConfig(**fleet), training=TrainConfig(**raw.pop("training")),
                   output_dir=Path(raw.pop("output_dir")), cache_dir=Path(cache) if cache else None, **raw)


def machine_sequences(data: MachineData, names: list[str], settings: MonitorSettings, length: int) -> np.ndarray:
    """Every ``length``-long run of normalised, healthy feature vectors of one machine.

    The normalisation is the monitor's own, learnt from the machine's first baseline windows, so the
    network sees what the scorer is given at run time.
    """
    normaliser = Normaliser(names, settings.scale_floor)
    normaliser.fit(data.features[: settings.baseline_windows])
    healthy = normaliser(data.features[data.healthy])
    windows = np.lib.stride_tricks.sliding_window_view(healthy, length, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 2, 1), dtype=np.float32)


def fleet_sequences(config: RunConfig, settings: MonitorSettings) -> tuple[np.ndarray, np.ndarray]:
    """Healthy sequences of the training fleet: (training machines', validation machines')."""
    train: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    cut = config.fleet.machines - config.validation_machines
    for index, data in enumerate(fleet_data(config.fleet, config.cache_dir)):
        part = machine_sequences(data, config.fleet.feature_names, settings, config.sequence_length)
        (train if index < cut else validation).append(part)
        print(f"{data.machine_id}: {len(part)} healthy sequences", flush=True)
    return np.concatenate(train), np.concatenate(validation)


def write_model(model: LstmAutoencoder, config: RunConfig, config_path: Path, settings: MonitorSettings,
                check: np.ndarray) -> Path:
    """Export to ONNX, verify it against PyTorch, and write the manifest beside it."""
    out = config.output_dir
    onnx_path = export_onnx(model, out / "model.onnx", config.sequence_length)
    worst = check_export(model, onnx_path, check)
    print(f"ONNX Runtime matches PyTorch (max abs difference {worst:.2e})")
    length, count = config.sequence_length, model.config.n_features
    manifest = Manifest(
        name=config.name,
        task="vibration",
        version=config.version,
        inputs=[TensorSpec(name=INPUT_NAME, shape=["batch", length, count])],
        outputs=[TensorSpec(name=OUTPUT_NAMES[0], shape=["batch", length, count]),
                 TensorSpec(name=OUTPUT_NAMES[1], shape=["batch", length])],
        preprocessing={
            "feature_names": config.fleet.feature_names,
            "sequence_length": length,
            "normalisation": "per machine: z-scores over its baseline windows, log scale for positive features "
                             "(models.vibration.runtime.monitor.Normaliser)",
            "spike_removal": True,
        },
        postprocessing={"score": "z-score of the log reconstruction error against the machine's baseline "
                                 "(models.vibration.runtime.lstm.LstmAutoencoderScorer)"},
        thresholds={key: float(getattr(settings, key)) for key in THRESHOLD_SETTINGS},
        report="README.md",
        training={"command": f"python -m models.vibration.train --config {config_path}", "seed": config.seed,
                  "network": model.config.as_dict(), "fleet": asdict(config.fleet)},
    )
    return write_manifest(manifest, out / "manifest.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("models/vibration/train.yaml"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = RunConfig.load(args.config)
    settings = MonitorSettings(**config.monitor)
    started = time.monotonic()
    train, validation = fleet_sequences(config, settings)
    print(f"{len(train)} training and {len(validation)} validation sequences "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    network = NetworkConfig(n_features=train.shape[2], **config.network)
    model, history = train_autoencoder(train, validation, network, config.training, config.seed,
                                       log=lambda line: print(line, flush=True))
    config.output_dir.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(history, config.output_dir / "learning_curves.png")
    check = validation[np.random.default_rng(config.seed).choice(len(validation), 64, replace=False)]
    manifest = write_model(model, config, args.config, settings, check)
    print(f"wrote {manifest} ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

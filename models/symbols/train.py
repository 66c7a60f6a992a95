"""Train the Deep Watershed Detector head by head, then jointly, on degraded crops of engraved pages; export it.

    python -m models.symbols.train --config models/symbols/train.yaml --out /tmp/stage1
    python -m models.symbols.train --config models/symbols/train-stage2.yaml --out /tmp/stage2
    python -m models.symbols.train --config models/symbols/train-stage3.yaml

Stages 2 and 3 continue the previous stage's checkpoint jointly at lower learning rates.  Each writes
``checkpoint.pt`` and ``history.json`` to ``--out`` (default: beside this file), then exports
``model.onnx`` + ``manifest.yaml`` there (models/symbols/export.py).  ``--steps N`` overrides every
phase's length (CI runs a few steps to prove the path).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional

from models.symbols import data, engrave
from models.symbols.network import WatershedDetector

COMMAND = ("python -m models.symbols.train --config models/symbols/train.yaml --out /tmp/stage1 && "
           "python -m models.symbols.train --config models/symbols/train-stage2.yaml --out /tmp/stage2 && "
           "python -m models.symbols.train --config models/symbols/train-stage3.yaml")
FOLDER = Path(__file__).parent
Head = Literal["energy", "class", "size"]


class Phase(BaseModel):
    """One stretch of training: which heads' losses count, for how many steps, at which learning rate."""

    model_config = ConfigDict(extra="forbid")
    heads: list[Head]
    steps: int = Field(ge=0)
    lr: float = Field(gt=0)


class PagesConfig(BaseModel):
    """How many engraved pages each split has (cached under models/symbols/.cache)."""

    model_config = ConfigDict(extra="forbid")
    train: int = 200
    val: int = 30
    seed: int = 1


class TrainConfig(BaseModel):
    """Everything that makes the shipped detector."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 7
    threads: int = Field(default=1, description="torch threads (the training machine is shared)")
    levels: int = Field(default=8, description="quantised watershed energy levels")
    widths: list[int] = Field(default=[16, 24, 48, 64, 96], description="channels per resolution")
    crop: int = Field(default=128, description="training crop side, pixels (a multiple of 16)")
    batch: int = 6
    strength: float = Field(default=1.0, description="degradation strength (0 = clean engravings)")
    energy_object_weight: float = Field(default=4.0, description="CE weight of energy levels > 0 vs 0")
    size_weight: float = Field(default=1.0, description="weight of the masked log-size MSE")
    pages: PagesConfig = Field(default_factory=PagesConfig)
    init: Path | None = Field(default=None, description="checkpoint to continue from (a second stage)")
    phases: list[Phase]
    eval_every: int = 100


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def losses(net: WatershedDetector, batch: tuple[np.ndarray, ...], config: TrainConfig) -> dict[str, torch.Tensor]:
    """DWD's three losses: energy cross-entropy, class cross-entropy and log-size MSE masked to objects."""
    images, energy, classes, sizes = (torch.from_numpy(a) for a in batch)
    energy_logits, class_logits, log_size = net(images)
    weights = torch.full((config.levels,), config.energy_object_weight)
    weights[0] = 1.0
    mask = energy > 0
    result = {"energy": functional.cross_entropy(energy_logits, energy, weight=weights)}
    if mask.any():
        result["class"] = functional.cross_entropy(class_logits.permute(0, 2, 3, 1)[mask], classes[mask])
        target = torch.log(sizes.clamp(min=1.0)).permute(0, 2, 3, 1)[mask]
        result["size"] = config.size_weight * functional.mse_loss(log_size.permute(0, 2, 3, 1)[mask], target)
    else:
        zero = energy_logits.sum() * 0
        result["class"], result["size"] = zero, zero
    return result


def split_pages(config: TrainConfig) -> tuple[data.PageSet, data.PageSet]:
    """The training and validation pages (training composers only; cached)."""
    return (data.cached_pages("train", engrave.TRAIN_COMPOSERS, engrave.TRAIN_FONTS, config.pages.train,
                              config.pages.seed),
            data.cached_pages("val", engrave.TRAIN_COMPOSERS, engrave.TRAIN_FONTS, config.pages.val,
                              config.pages.seed + 1))


def train(config: TrainConfig, steps: int | None = None, pages: tuple[data.PageSet, data.PageSet] | None = None
          ) -> tuple[WatershedDetector, list[dict[str, float]]]:
    """Run every phase; returns the network and the history (train and validation loss per head)."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train_pages, val_pages = pages or split_pages(config)
    val_batches = [data.batch(val_pages, np.random.default_rng(99 + i), config.crop, config.batch,
                              config.levels, config.strength) for i in range(4)]
    net = WatershedDetector(len(engrave.CLASS_NAMES), config.levels, tuple(config.widths))
    if config.init is not None:
        net.load_state_dict(torch.load(config.init))
    history: list[dict[str, float]] = []
    step, started = 0, time.time()
    for phase_index, phase in enumerate(config.phases):
        optimiser = torch.optim.Adam(net.parameters(), lr=phase.lr)
        length = phase.steps if steps is None else steps
        for phase_step in range(length):
            net.train()
            for group in optimiser.param_groups:  # cosine decay within the phase
                group["lr"] = phase.lr * 0.5 * (1 + np.cos(np.pi * phase_step / max(length, 1)))
            parts = losses(net, data.batch(train_pages, rng, config.crop, config.batch, config.levels,
                                           config.strength), config)
            loss = sum((parts[head] for head in phase.heads), torch.zeros(()))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if step % config.eval_every == 0 or phase_step == length - 1:
                history.append({"step": step, "phase": phase_index, "seconds": time.time() - started,
                                **{f"train_{k}": float(v.detach()) for k, v in parts.items()},
                                **{f"val_{k}": v for k, v in validate(net, val_batches, config).items()}})
                print(json.dumps(history[-1]), flush=True)
    return net, history


def validate(net: WatershedDetector, batches: list[tuple[np.ndarray, ...]], config: TrainConfig
             ) -> dict[str, float]:
    net.eval()
    with torch.no_grad():
        totals = [losses(net, b, config) for b in batches]
    return {head: float(np.mean([float(t[head]) for t in totals])) for head in ("energy", "class", "size")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=FOLDER / "train.yaml")
    parser.add_argument("--steps", type=int, help="override every phase's steps (a smoke run)")
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder for checkpoint, history and model")
    args = parser.parse_args()
    config = load_config(args.config)
    net, history = train(config, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out / "checkpoint.pt")
    (args.out / "history.json").write_text(json.dumps(history, indent=1))
    from models.symbols.export import export

    export(net, config, args.out)


if __name__ == "__main__":
    main()

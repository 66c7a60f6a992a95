"""Train the face embedder with an ArcFace margin on group-balanced batches, keep the best on validation, export.

    python -m models.faces.train                      # config: models/faces/train.yaml

Writes ``variants/<variant>/`` (checkpoint, history.json), then ``model.onnx`` + ``manifest.yaml`` (threshold
chosen on the validation identities) and ``learning_curves.png``.  ``--select`` skips training and only exports;
``--no-export`` only trains (a variant to compare on validation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.faces import metrics
from models.faces.data import Bank, DataConfig, load_split
from models.faces.network import ArcMargin, Embedder, FaceNet, NetworkConfig, preprocess

FOLDER = Path(__file__).parent
CONFIG = FOLDER / "train.yaml"
COMMAND = "python -m models.faces.train"


class FitConfig(BaseModel):
    """Optimisation: steps, group-balanced batch shape, AdamW with cosine decay, ArcFace margin and warm-up."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(description="optimiser steps")
    identities_per_group: int = Field(default=16, description="identities drawn from every group per batch")
    images_per_identity: int = Field(default=2, description="pictures per drawn identity")
    lr: float = Field(default=2e-3, description="AdamW learning rate")
    lr_final: float = Field(default=5e-5, description="learning rate at the last step (cosine decay)")
    weight_decay: float = Field(default=5e-4)
    arc_scale: float = Field(default=32.0, description="s of ArcFace")
    arc_margin: float = Field(default=0.4, description="m of ArcFace (radians)")
    margin_warmup: float = Field(default=0.2, description="share of the steps over which m grows from 0")
    eval_every: int = Field(default=100, description="steps between validation passes")


class TrainConfig(BaseModel):
    """Everything that makes the shipped model: seed, data, network, optimisation."""

    model_config = ConfigDict(extra="forbid")
    variant: str = Field(default="arcface", description="folder under variants/ for its checkpoint and history")
    seed: int = 5
    threads: int = Field(default=1, description="torch threads (the training machine is shared)")
    data: DataConfig = Field(default_factory=DataConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    fit: FitConfig


def load_config(path: str | Path = CONFIG) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))


class GroupBalancedSampler:
    """Every batch holds the same number of identities from each group, several pictures of each."""

    def __init__(self, bank: Bank, identities_per_group: int, images_per_identity: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.by_identity = [np.flatnonzero(bank.labels == k) for k in range(int(bank.labels.max()) + 1)]
        group_of = {int(label): str(group) for label, group in zip(bank.labels, bank.groups, strict=True)}
        self.by_group = [np.array([k for k, g in group_of.items() if g == group])
                         for group in sorted(set(group_of.values()))]
        self.per_group, self.per_identity = identities_per_group, images_per_identity

    def __call__(self) -> np.ndarray:
        chosen = np.concatenate([self.rng.choice(ids, min(self.per_group, len(ids)), replace=False)
                                 for ids in self.by_group])
        return np.concatenate([self.rng.choice(self.by_identity[k], self.per_identity, replace=False)
                               for k in chosen])


def embed_bank(net: FaceNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Unit embeddings of uint8 crops, in eval mode."""
    model = Embedder(net).eval()
    with torch.no_grad():
        parts = [model(torch.from_numpy(preprocess(images[i : i + batch]))).numpy()
                 for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def validate(net: FaceNet, bank: Bank) -> dict[str, float]:
    """Best-threshold pair accuracy and rank-1 on the validation identities."""
    embeddings = embed_bank(net, bank.images)
    first, second, same = metrics.make_pairs(bank.labels, bank.groups, np.random.default_rng(0), 400)
    _, accuracy = metrics.best_threshold(metrics.cosine_scores(embeddings, first, second), same)
    gallery, probes = metrics.gallery_split(bank.labels)
    return {"val_accuracy": accuracy, "val_rank1": metrics.rank1(embeddings, bank.labels, gallery, probes)}


def margin_at(fit: FitConfig, step: int) -> float:
    """ArcFace's margin grows linearly over the warm-up: a full margin from step 1 stalls a fresh network."""
    warm = max(1, int(fit.margin_warmup * fit.steps))
    return fit.arc_margin * min(1.0, step / warm)


def train(config: TrainConfig, train_bank: Bank, val_bank: Bank, out: Path) -> dict[str, Any]:
    """Train; keep the checkpoint with the best validation accuracy; return the history."""
    torch.manual_seed(config.seed)
    net = FaceNet(config.network)
    fit = config.fit
    head = ArcMargin(config.network.embedding, int(train_bank.labels.max()) + 1, fit.arc_scale, fit.arc_margin)
    optimiser = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, fit.steps, eta_min=fit.lr_final)
    sampler = GroupBalancedSampler(train_bank, fit.identities_per_group, fit.images_per_identity, config.seed)
    history: dict[str, list[float]] = {}
    best, running, started = -1.0, [], time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for step in range(1, fit.steps + 1):
        net.train()
        index = np.sort(sampler())
        images = torch.from_numpy(preprocess(train_bank.images[index]))
        loss = head(net(images), torch.from_numpy(train_bank.labels[index]), margin_at(fit, step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(float(loss.detach()))
        if step % fit.eval_every == 0 or step == fit.steps:
            scores = {"train_loss": float(np.mean(running)), **validate(net, val_bank)}
            for key, value in [("step", step), ("seconds", time.monotonic() - started), *scores.items()]:
                history.setdefault(key, []).append(float(value))
            running = []
            if scores["val_accuracy"] >= best:
                best = scores["val_accuracy"]
                torch.save({"state": net.state_dict(), "step": step}, out / "checkpoint.pt")
            print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    summary = {"best_val_accuracy": best, "train_identities": int(train_bank.labels.max()) + 1,
               "train_images": len(train_bank), "minutes": (time.monotonic() - started) / 60, "history": history}
    (out / "history.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_trained(config: TrainConfig, folder: Path) -> FaceNet:
    """The best checkpoint, in eval mode."""
    saved = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    net = FaceNet(config.network)
    net.load_state_dict(saved["state"])
    return net.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", default=CONFIG, type=Path)
    parser.add_argument("--select", action="store_true", help="no training: export the saved checkpoint")
    parser.add_argument("--no-export", action="store_true", help="train only (a variant to compare on validation)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    val_bank = load_split(config.data, "val")
    variant = FOLDER / "variants" / config.variant
    if not args.select:
        train_bank = load_split(config.data, "train")
        print(f"banks ready in {time.monotonic() - started:.0f} s: {len(train_bank)} train, {len(val_bank)} val")
        train(config, train_bank, val_bank, variant)
    if args.no_export:
        return
    from models.faces.export import export_with_manifest
    from models.faces.plots import learning_curves

    histories = {path.parent.name: json.loads(path.read_text())
                 for path in sorted(variant.parent.glob("*/history.json"))}
    learning_curves(histories, FOLDER / "learning_curves.png")
    print("exported", export_with_manifest(load_trained(config, variant), val_bank, FOLDER, config, args.config))


if __name__ == "__main__":
    main()

"""Train the quality tile CNN from random init and from a pretrained start, export both, pick one.

    python -m models.quality.train --config models/quality/train.yaml

Writes ``variants/<name>/`` (ONNX, manifest, history) for every variant, copies the one with
the best validation recall at the target false-reject rate to ``model.onnx`` +
``manifest.yaml`` and draws the learning curves to ``learning_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional

from models.quality.data import CropSampler, build_bank
from models.quality.export import check_export, export_onnx, onnx_runner
from models.quality.network import NetworkConfig, TileNet
from models.quality.pretrain import pretrain_backbone
from models.quality.runtime.tiling import TileGeometry, infer
from models.runtime.manifest import Manifest, TensorSpec, write_manifest
from sensors.simulate.parts import LabelNoise, Part, PartGenerator

COMMAND = "python -m models.quality.train --config models/quality/train.yaml"
VAL_DEFECT_OFFSET = 100_000  # indices of the extra, forced-defective validation parts


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    seed: int = Field(description="generator seed (all splits)")
    defect_rate: float = Field(default=0.03, description="share of defective parts")
    train_parts: int = Field(description="parts in the training split; all labelled-defective ones are used")
    good_parts: int = Field(description="labelled-good training parts rendered for negative crops")
    val_parts: int = Field(description="validation parts at the natural defect rate (threshold)")
    val_defective: int = Field(description="extra defective validation parts (recall, curves)")


class FitConfig(Strict):
    steps: int
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    positive_fraction: float = Field(default=0.5, description="share of defect crops per batch")
    hard_fraction: float = Field(default=0.0, ge=0, le=0.5,
                                 description="share of good crops cut around known look-alikes (dust)")
    cell_pos_weight: float = Field(default=4.0, description="class weight of defective heat-map cells")
    tile_pos_weight: float = Field(default=1.0, description="class weight of defective tiles")
    eval_every: int = 250


class PretrainConfig(Strict):
    steps: int
    batch: int = 64
    lr: float = 2e-3


class TrainConfig(Strict):
    seed: int
    output: Path
    data: DataConfig
    geometry: dict[str, float] = Field(default_factory=dict)
    network: dict[str, Any] = Field(default_factory=dict)
    pretrain: PretrainConfig
    train: FitConfig
    target_false_reject: float = 0.01
    variants: list[str] = Field(default=["random", "pretrained"])
    version: str = "1.0.0"


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def geometry_of(config: TrainConfig) -> TileGeometry:
    values = dict(config.geometry)
    ints = {k: int(v) for k, v in values.items() if k in ("tile", "stride", "cell")}
    return TileGeometry(**{**values, **ints})  # type: ignore[arg-type]


def loss_of(net: TileNet, x: torch.Tensor, tile: torch.Tensor, cells: torch.Tensor,
            fit: FitConfig) -> torch.Tensor:
    """Class-weighted BCE on the heat-map cells plus on the max-pooled tile logit."""
    tile_logit, cell_logits = net(x)
    cell_loss = functional.binary_cross_entropy_with_logits(
        cell_logits, cells, pos_weight=torch.tensor(fit.cell_pos_weight))
    tile_loss = functional.binary_cross_entropy_with_logits(
        tile_logit, tile, pos_weight=torch.tensor(fit.tile_pos_weight))
    return cell_loss + tile_loss


def fit(net: TileNet, sampler: CropSampler, val: tuple[np.ndarray, ...], fit: FitConfig,
        log_name: str) -> list[dict[str, float]]:
    """Train on sampled crops; every ``eval_every`` steps record the validation crop loss/accuracy."""
    optimiser = torch.optim.AdamW(net.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=fit.lr, total_steps=fit.steps)
    history: list[dict[str, float]] = []
    running, started = [], time.monotonic()
    for step in range(1, fit.steps + 1):
        net.train()
        x, tile, cells = (torch.from_numpy(a) for a in sampler.batch(fit.batch))
        loss = loss_of(net, x, tile, cells, fit)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(float(loss.detach()))
        if step % fit.eval_every == 0 or step == fit.steps:
            record = {"step": step, "train_loss": float(np.mean(running)), **evaluate_crops(net, val, fit)}
            running = []
            history.append(record)
            print(f"[{log_name}] step {step}/{fit.steps} {record} {time.monotonic() - started:.0f}s", flush=True)
    return history


def evaluate_crops(net: TileNet, val: tuple[np.ndarray, ...], fit: FitConfig) -> dict[str, float]:
    net.eval()
    x, tile, cells = (torch.from_numpy(a) for a in val)
    with torch.no_grad():
        loss = float(loss_of(net, x, tile, cells, fit))
        accuracy = float(((net(x)[0] > 0).float() == tile).float().mean())
    return {"val_loss": loss, "val_accuracy": accuracy}


def choose_threshold(good_scores: np.ndarray, target: float) -> float:
    """Smallest threshold that rejects at most ``target`` of the good parts (reject if score > t)."""
    ordered = np.sort(np.asarray(good_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(target * len(ordered)))
    return float(ordered[min(allowed, len(ordered) - 1)])


FALSE_REJECT_TABLE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def threshold_table(good_scores: np.ndarray) -> dict[str, float]:
    """Thresholds for a few false-reject targets, so an operator can trade recall for rejects."""
    return {f"{target:g}": choose_threshold(good_scores, target) for target in FALSE_REJECT_TABLE}


def frame_scores(path: Path, parts: list[Part], geometry: TileGeometry) -> np.ndarray:
    run = onnx_runner(path)
    return np.array([infer(run, part.image, geometry).score for part in parts])


def manifest_for(config: TrainConfig, geometry: TileGeometry, thresholds: dict[str, float], variant: str,
                 report: str, extra: dict[str, Any]) -> Manifest:
    """The manifest of one variant; ``thresholds`` maps false-reject targets to thresholds."""
    g = geometry.tile // geometry.cell
    features = NetworkConfig(**config.network).widths[-1]
    return Manifest(
        name=f"quality-tilenet-{variant}", task="quality", version=config.version, file="model.onnx",
        inputs=[TensorSpec(name="tiles", shape=["batch", 1, geometry.tile, geometry.tile])],
        outputs=[TensorSpec(name="tile_prob", shape=["batch"]), TensorSpec(name="cell_prob", shape=["batch", g, g]),
                 TensorSpec(name="cell_features", shape=["batch", features, g, g])],
        preprocessing={"color": "gray", "tile": geometry.tile, "stride": geometry.stride, "cell": geometry.cell,
                       "normalisation": {"scale": 1 / 255, "mean": geometry.mean, "std": geometry.std}},
        postprocessing={"aggregate": "max over tiles", "heatmap": "cell_prob stitched, max over overlaps",
                        "reject_if": "score > threshold",
                        "false_reject_thresholds": thresholds},
        classes=["good", "defective"], thresholds={"reject": thresholds[f"{config.target_false_reject:g}"]},
        report=report,
        training={"command": COMMAND, "seed": config.seed, "variant": variant,
                  "target_false_reject": config.target_false_reject, **extra},
    )


def run_variant(variant: str, config: TrainConfig, sampler: CropSampler, val_crops: tuple[np.ndarray, ...],
                val_parts: list[Part], backbone: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Train, export, check and threshold one variant; return its summary."""
    geometry = geometry_of(config)
    torch.manual_seed(config.seed)
    net = TileNet(NetworkConfig(**config.network))
    if variant == "pretrained":
        if backbone is None:
            raise ValueError("the pretrained variant needs the pretraining backbone")
        net.backbone.load_state_dict(backbone)
    started = time.monotonic()
    history = fit(net, sampler, val_crops, config.train, variant)
    train_s = time.monotonic() - started
    folder = config.output / "variants" / variant
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "network": net.config.as_dict()}, folder / "checkpoint.pt")
    onnx_path = export_onnx(net.eval(), folder / "model.onnx", geometry.tile)
    max_diff = check_export(net, onnx_path, val_crops[0][:64])
    scores = frame_scores(onnx_path, val_parts, geometry)
    truth = np.array([part.defective for part in val_parts])
    threshold = choose_threshold(scores[~truth], config.target_false_reject)
    summary = {"variant": variant, "threshold": threshold, "train_seconds": round(train_s, 1),
               "onnx_max_abs_diff": max_diff, "val_recall": float(np.mean(scores[truth] > threshold)),
               "val_false_reject": float(np.mean(scores[~truth] > threshold)),
               "val_good": int((~truth).sum()), "val_defective": int(truth.sum()), "history": history}
    table = {**threshold_table(scores[~truth]), f"{config.target_false_reject:g}": threshold}
    manifest = manifest_for(config, geometry, table, variant, "../../README.md",
                            {"val_recall": summary["val_recall"]})
    write_manifest(manifest, folder / "manifest.yaml")
    (folder / "history.json").write_text(json.dumps(summary, indent=1))
    return summary


def val_crop_set(parts: list[Part], geometry: TileGeometry, seed: int, size: int = 1024) -> tuple[np.ndarray, ...]:
    sampler = CropSampler(build_bank(parts), geometry, positive_fraction=0.5, seed=seed)
    return sampler.batch(size, augment=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="models/quality/train.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(1)
    geometry = geometry_of(config)
    data = config.data
    generator = PartGenerator(data.seed, data.defect_rate, LabelNoise())
    started = time.monotonic()
    bad, good = generator.indices("train", data.train_parts)
    train_parts = [generator.part("train", i) for i in bad + good[: data.good_parts]]
    sampler = CropSampler(build_bank(train_parts), geometry, config.train.positive_fraction, config.seed,
                          config.train.hard_fraction)
    del train_parts
    val_parts = [generator.part("val", i) for i in range(data.val_parts)]
    val_parts += [generator.part("val", VAL_DEFECT_OFFSET + i, defective=True) for i in range(data.val_defective)]
    val_crops = val_crop_set(val_parts, geometry, config.seed + 1)
    print(f"data: {len(bad)} labelled-defective + {data.good_parts} good training parts, "
          f"{len(val_parts)} validation parts, {time.monotonic() - started:.0f}s", flush=True)
    backbone: dict[str, torch.Tensor] | None = None
    pre_history: list[dict[str, float]] = []
    if "pretrained" in config.variants:
        p = config.pretrain
        backbone, pre_history = pretrain_backbone(NetworkConfig(**config.network), p.steps, p.batch, p.lr,
                                                  geometry.tile, config.seed)
        print(f"pretraining done: last accuracy {np.mean([h['accuracy'] for h in pre_history[-50:]]):.3f}")
    summaries = [run_variant(v, config, sampler, val_crops, val_parts, backbone) for v in config.variants]
    best = max(summaries, key=lambda s: (s["val_recall"], -s["val_false_reject"]))
    publish(config, best["variant"])
    (config.output / "variants" / "pretrain_history.json").write_text(json.dumps(pre_history))
    from models.quality.plots import learning_curves

    learning_curves(summaries, pre_history, config.output / "learning_curves.png")
    for s in summaries:
        print(f"{s['variant']}: val recall {s['val_recall']:.3f} at false-reject {s['val_false_reject']:.4f}, "
              f"threshold {s['threshold']:.4f}, {s['train_seconds']:.0f}s, onnx diff {s['onnx_max_abs_diff']:.2e}")
    print(f"published variant: {best['variant']}")


def publish(config: TrainConfig, variant: str) -> None:
    """Copy a variant's ONNX file to the model folder and write the folder's manifest for it."""
    source = config.output / "variants" / variant
    shutil.copyfile(source / "model.onnx", config.output / "model.onnx")
    manifest = Manifest.model_validate({**yaml.safe_load((source / "manifest.yaml").read_text()),
                                        "report": "README.md", "name": "quality-tilenet"})
    write_manifest(manifest, config.output / "manifest.yaml")


if __name__ == "__main__":
    main()

"""Train the face detector on synthetic scenes, keep the best checkpoint on validation AP, export to ONNX.

    python -m models.faces.detector.train             # config: models/faces/detector/train.yaml

Renders the scenes once (cached in ``build/faces-detector-scenes/``), trains on random crops of the letterboxed
training frames, scores validation AP@0.5 every ``eval_every`` steps, and writes ``model.onnx`` (checked
against PyTorch) and ``manifest.yaml`` with the best-F1 score threshold on the validation scenes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.faces.detector import metrics
from models.faces.detector.data import SceneConfig, Scenes, load_scenes
from models.faces.detector.export import check_export, export_onnx, onnx_outputs, write_detector_manifest
from models.faces.detector.network import FaceCenterNet, NetworkConfig
from models.faces.detector.targets import FLIP_ORDER, detector_loss, make_targets
from models.faces.runtime.detector import decode, preprocess

FOLDER = Path(__file__).parent
CONFIG = FOLDER / "train.yaml"
CHECKPOINT = FOLDER / "checkpoint.pt"  # gitignored (models/*/detector/checkpoint.pt)


class FitConfig(BaseModel):
    """Optimisation: steps, batch of random crops, AdamW with cosine decay, loss weights."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(description="optimiser steps")
    batch: int = Field(default=12, description="crops per step")
    crop: tuple[int, int] = Field(default=(128, 192), description="crop height, width in input pixels (of 240x320)")
    lr: float = Field(default=2e-3, description="AdamW learning rate")
    lr_final: float = Field(default=5e-5, description="learning rate at the last step (cosine decay)")
    weight_decay: float = Field(default=1e-4)
    loss_weights: tuple[float, float, float] = Field(default=(1.0, 1.0, 2.0), description="heatmap, box, landmarks")
    eval_every: int = Field(default=100, description="steps between validation passes")


class TrainConfig(BaseModel):
    """Everything that makes the shipped detector: seed, data, network, optimisation."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 7
    threads: int = Field(default=2, description="torch threads (the training machine is shared)")
    data: SceneConfig = Field(default_factory=SceneConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    fit: FitConfig


def load_config(path: str | Path = CONFIG) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def sample_batch(scenes: Scenes, rng: np.random.Generator, fit: FitConfig) -> tuple[np.ndarray, list[np.ndarray],
                                                                                     list[np.ndarray]]:
    """Random crops with random mirror and light: images (B, h, w, 3) uint8, boxes and landmarks per crop."""
    height, width = fit.crop
    images, boxes, marks = [], [], []
    for index in rng.integers(0, len(scenes.images), fit.batch):
        frame = scenes.images[index]
        y, x = int(rng.integers(0, frame.shape[0] - height + 1)), int(rng.integers(0, frame.shape[1] - width + 1))
        crop = frame[y : y + height, x : x + width].astype(np.float32)
        b = scenes.boxes[index] - np.array([x, y, x, y], np.float32)
        m = scenes.landmarks[index] - np.array([x, y], np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            b = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
            m = np.stack([width - m[:, FLIP_ORDER, 0], m[:, FLIP_ORDER, 1]], 2)
        crop = (crop - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)  # contrast and brightness
        images.append(np.clip(crop, 0, 255).astype(np.uint8))
        boxes.append(b)
        marks.append(m)
    return np.stack(images), boxes, marks


def predict(net: FaceCenterNet, images: np.ndarray, batch: int = 16) -> list[np.ndarray]:
    """Heatmap (sigmoid), box and landmark maps of uint8 letterboxed frames with PyTorch."""
    net.eval()
    parts: list[list[np.ndarray]] = [[], [], []]
    with torch.no_grad():
        for start in range(0, len(images), batch):
            heat, box, marks = net(torch.from_numpy(preprocess(images[start : start + batch])))
            for part, tensor in zip(parts, (torch.sigmoid(heat), box, marks), strict=True):
                part.append(tensor.numpy())
    return [np.concatenate(p) for p in parts]


def match_scenes(outputs: list[np.ndarray], scenes: Scenes, threshold: float = 0.05) -> list[metrics.Matched]:
    """Decode every frame's outputs at a low threshold and match them to its faces (input pixels)."""
    heat, box, marks = outputs
    found = []
    for i in range(len(heat)):
        boxes, _, scores = decode(heat[i, 0], box[i], marks[i], threshold, 50)
        found.append(metrics.match(boxes, scores, scenes.boxes[i]))
    return found


def landmark_error(outputs: list[np.ndarray], scenes: Scenes, threshold: float = 0.3) -> float:
    """Mean NME (over the inter-ocular distance) of the faces found at ``threshold`` in ``scenes``."""
    heat, box, marks = outputs
    errors = []
    for i in range(len(heat)):
        boxes, landmarks, scores = decode(heat[i, 0], box[i], marks[i], threshold, 50)
        matched = metrics.match(boxes, scores, scenes.boxes[i])  # boxes come strongest first, as matched
        errors += [metrics.landmark_nme(landmarks[d], scenes.landmarks[i][f])
                   for d, f in enumerate(matched.face_of) if f >= 0 and np.all(np.isfinite(scenes.landmarks[i][f]))]
    return float(np.mean(errors)) if errors else float("nan")


def fit(config: TrainConfig, train: Scenes, val: Scenes, steps: int | None = None) -> tuple[FaceCenterNet, list[dict]]:
    """Train from scratch; return the network with the best validation AP@0.5 loaded, and the history."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = FaceCenterNet(config.network)
    steps = steps or config.fit.steps
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.fit.lr, weight_decay=config.fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=config.fit.lr_final)
    history: list[dict] = []
    best, best_state, started, running = -1.0, net.state_dict(), time.monotonic(), []
    for step in range(1, steps + 1):
        net.train()
        images, boxes, marks = sample_batch(train, rng, config.fit)
        targets = make_targets(images.shape[1:3], boxes, marks)
        loss, parts = detector_loss(net(torch.from_numpy(preprocess(images))), targets, config.fit.loss_weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(parts)
        if step % config.fit.eval_every == 0 or step == steps:
            outputs = predict(net, val.images)
            ap = metrics.average_precision(match_scenes(outputs, val))
            mean = {k: round(float(np.mean([r[k] for r in running])), 4) for k in running[0]}
            history.append({"step": step, "val_ap50": round(ap, 4), "val_nme": round(landmark_error(outputs, val), 4),
                            "minutes": round((time.monotonic() - started) / 60,
                                                                                      2), **mean})
            print(json.dumps(history[-1]), flush=True)
            running = []
            if ap > best:
                best, best_state = ap, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    return net.eval(), history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, default=FOLDER, help="where model.onnx and manifest.yaml go")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    train, val = load_scenes(config.data, "train"), load_scenes(config.data, "val")
    print(f"scenes: {len(train.images)} train, {len(val.images)} val ({time.monotonic() - started:.0f} s)")
    net, history = fit(config, train, val)
    torch.save(net.state_dict(), args.out / CHECKPOINT.name)
    path = export_onnx(net, args.out / "model.onnx")
    worst = check_export(net, path, val.images[:8])
    print(f"ONNX vs PyTorch: max abs difference {worst:.2e} over 8 frames")
    threshold, f1 = metrics.best_f1_threshold(match_scenes(onnx_outputs(path, val.images), val))
    minutes = round((time.monotonic() - started) / 60, 1)
    (args.out / "history.json").write_text(json.dumps({"history": history, "minutes": minutes}, indent=1) + "\n")
    root = Path(__file__).resolve().parents[3]
    shown = args.config.resolve()
    shown = shown.relative_to(root) if shown.is_relative_to(root) else shown  # no machine paths in the manifest
    write_detector_manifest(args.out, threshold, worst, {
        "command": f"python -m models.faces.detector.train --config {shown}", "seed": config.seed,
        "data_seed": config.data.seed, "val_ap50": max(h["val_ap50"] for h in history), "val_f1": round(f1, 4),
        "minutes": minutes})
    print(f"score threshold {threshold} (validation F1 {f1:.3f}); {minutes} min in all")


if __name__ == "__main__":
    main()

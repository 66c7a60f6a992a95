"""Train the speaker network with each configured loss, keep the best on validation speakers, export it.

    python -m models.speakers.train --config models/speakers/train.yaml

Writes ``variants/<loss>/`` (checkpoint, history) for every loss, then exports the one with the lowest
validation MR (ties: the lower validation pair error) to ``model.onnx`` + ``manifest.yaml`` with the
thresholds chosen on the validation speakers, and draws ``learning_curves.png``.  ``--only LOSS`` trains
one variant (to run variants in parallel); ``--select`` skips training and only selects and exports.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from models.speakers import metrics
from models.speakers.data import CorpusConfig, Utterance, build_corpus, segment_bank
from models.speakers.network import AdditiveMarginSoftmax, NetworkConfig, SpeakerNet, pkld_loss

COMMAND = "python -m models.speakers.train --config models/speakers/train.yaml"
FOLDER = Path(__file__).parent
Loss = Literal["pkld", "am_softmax"]


class FitConfig(BaseModel):
    """Optimisation settings shared by every loss."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(description="optimiser steps")
    speakers_per_batch: int = Field(default=16, description="P speakers drawn per batch")
    segments_per_speaker: int = Field(default=4, description="K segments per speaker (P x K per batch)")
    lr: float = Field(default=1e-3, description="Adam learning rate")
    lr_final: float = Field(default=1e-4, description="learning rate at the last step (cosine decay)")
    clip: float = Field(default=5.0, description="gradient norm clip (LSTMs)")
    pkld_margin: float = Field(default=3.0, description="m of the PKLD hinge")
    am_scale: float = Field(default=30.0, description="s of the additive-margin softmax")
    am_margin: float = Field(default=0.35, description="m of the additive-margin softmax")
    eval_every: int = Field(default=100, description="steps between validation passes")


class TrainConfig(BaseModel):
    """Everything that makes the shipped model: seed, corpus, network, optimisation, losses compared."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 7
    threads: int = Field(default=1, description="torch threads (the training machine is shared)")
    losses: list[Loss] = Field(default=["pkld", "am_softmax"], description="variants trained and compared")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    fit: FitConfig


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(Path(path).read_text()))


def torch_embedder(net: SpeakerNet, batch: int = 512) -> metrics.EmbedSegments:
    """A numpy segments -> embeddings function running ``net`` in eval mode."""

    def embed(segments: np.ndarray) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            parts = [net.embed(torch.from_numpy(segments[i : i + batch])).numpy()
                     for i in range(0, len(segments), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, 2 * net.first.hidden_size), np.float32)

    return embed


def validate(net: SpeakerNet, utterances: list[Utterance]) -> dict[str, float]:
    """Validation MR at the true number of speakers, at the best cut, and the same/different pair error."""
    speakers = [u.speaker for u in utterances]
    embeddings = metrics.utterance_embeddings(torch_embedder(net), [u.mel for u in utterances])
    tree = metrics.complete_linkage(embeddings)
    mr_true_k = metrics.misclassification_rate(speakers, metrics.clusters_of_count(tree, len(set(speakers))))
    cut, mr_cut = metrics.choose_cut(embeddings, speakers)
    distances = 1.0 - metrics.unit(embeddings) @ metrics.unit(embeddings).T
    same = np.array([[a == b for b in speakers] for a in speakers])
    upper = np.triu(np.ones_like(same), k=1)
    _, pair_error = metrics.best_threshold(distances[same & upper], distances[~same & upper])
    return {"val_mr_true_k": mr_true_k, "val_mr_best_cut": mr_cut, "val_cut": cut, "val_pair_error": pair_error}


class BatchSampler:
    """P speakers x K segments per batch, so every batch holds same-speaker pairs for PKLD."""

    def __init__(self, labels: np.ndarray, speakers: int, per_speaker: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.by_speaker = [np.flatnonzero(labels == k) for k in range(int(labels.max()) + 1)]
        self.speakers, self.per_speaker = speakers, per_speaker

    def __call__(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.by_speaker), self.speakers, replace=False)
        return np.concatenate([self.rng.choice(self.by_speaker[k], self.per_speaker) for k in chosen])


def train_variant(config: TrainConfig, loss_name: Loss, corpus: dict[str, list[Utterance]],
                  out: Path) -> dict[str, Any]:
    """Train one loss variant; keep the checkpoint with the best validation figures; return its history."""
    torch.manual_seed(config.seed)
    segments, labels, names = segment_bank(corpus["train"])
    net = SpeakerNet(config.network.model_copy(update={"speakers": len(names)}))
    sample = np.random.default_rng(config.seed).choice(len(segments), min(len(segments), 4000), replace=False)
    net.norm.fit(torch.from_numpy(segments[np.sort(sample)]))
    fit = config.fit
    margin_head = AdditiveMarginSoftmax(5 * len(names), len(names), fit.am_scale, fit.am_margin)
    params = list(net.parameters()) + (list(margin_head.parameters()) if loss_name == "am_softmax" else [])
    optimiser = torch.optim.Adam(params, lr=fit.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, fit.steps, eta_min=fit.lr_final)
    sampler = BatchSampler(labels, fit.speakers_per_batch, fit.segments_per_speaker, config.seed)
    history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_mr_true_k": [], "val_mr_best_cut": [],
                                       "val_pair_error": [], "seconds": []}
    best: tuple[float, float] | None = None
    out.mkdir(parents=True, exist_ok=True)
    started, running = time.monotonic(), []
    for step in range(1, fit.steps + 1):
        net.train()
        index = sampler()
        mel, target = torch.from_numpy(segments[index]), torch.from_numpy(labels[index])
        if loss_name == "pkld":
            loss = pkld_loss(net(mel), target, fit.pkld_margin)
        else:
            loss = margin_head(net.features_before_softmax(mel), target)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, fit.clip)
        optimiser.step()
        schedule.step()
        running.append(float(loss.detach()))
        if step % fit.eval_every == 0 or step == fit.steps:
            scores = {"train_loss": float(np.mean(running)), **validate(net, corpus["val"])}
            for key, value in [("step", step), ("seconds", time.monotonic() - started), *scores.items()]:
                history.setdefault(key, []).append(float(value))
            running = []
            rank = (scores["val_mr_true_k"], scores["val_pair_error"])
            if best is None or rank <= best:
                best = rank
                torch.save({"state": net.state_dict(), "speakers": len(names), "step": step}, out / "checkpoint.pt")
            print(f"[{loss_name}] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                  flush=True)
    assert best is not None
    summary = {"loss": loss_name, "best_val_mr_true_k": best[0], "best_val_pair_error": best[1],
               "train_speakers": len(names), "train_segments": len(segments),
               "minutes": (time.monotonic() - started) / 60, "history": history}
    (out / "history.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_variant(config: TrainConfig, folder: Path) -> SpeakerNet:
    """The best checkpoint of a trained variant, in eval mode."""
    saved = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
    net = SpeakerNet(config.network.model_copy(update={"speakers": saved["speakers"]}))
    net.load_state_dict(saved["state"])
    return net.eval()


def select_and_export(config: TrainConfig, config_path: Path, corpus: dict[str, list[Utterance]],
                      folder: Path = FOLDER) -> Path:
    """Pick the variant with the best validation figures, export it with validation-chosen thresholds."""
    from models.speakers.export import export_with_manifest
    from models.speakers.plots import learning_curves

    summaries: dict[str, dict[str, Any]] = {loss: json.loads((folder / "variants" / loss / "history.json").read_text())
                 for loss in config.losses}
    chosen = min(summaries, key=lambda loss: (summaries[loss]["best_val_mr_true_k"],
                                              summaries[loss]["best_val_pair_error"]))
    net = load_variant(config, folder / "variants" / chosen)
    learning_curves(summaries, folder / "learning_curves.png")
    return export_with_manifest(net, corpus["val"], folder, config, config_path, chosen)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--only", choices=["pkld", "am_softmax"], help="train this variant only, no export")
    parser.add_argument("--select", action="store_true", help="no training: select and export")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.set_num_threads(config.threads)
    corpus = build_corpus(config.corpus)
    if not args.select:
        for loss in [args.only] if args.only else config.losses:
            train_variant(config, loss, corpus, FOLDER / "variants" / loss)
    if not args.only:
        print("exported", select_and_export(config, args.config, corpus))


if __name__ == "__main__":
    main()

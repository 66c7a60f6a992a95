"""Misclassification rate of the shipped embedder on held-out speakers, against Resemblyzer and the loss variants.

    python -m models.speakers.evaluate [--config models/speakers/train.yaml] [--no-resemblyzer]

Writes ``evaluation.json``, ``embedding_map.png``, ``embedding_map_independent.png`` and ``dendrogram.png``
beside the model.  :func:`evaluate` returns the same figures as a dict, so that other reports (the live
task's diarization error rate) can be added to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime.manifest import load_manifest
from models.speakers import metrics
from models.speakers.data import CorpusConfig, Utterance, build_split, speaker_splits
from models.speakers.export import onnx_embedder

FOLDER = Path(__file__).parent
PAPER_MR = 0.0219  # Lukic et al., 40 TIMIT speakers, BiLSTM + PKLD


def held_out_splits(config: CorpusConfig) -> dict[str, list[Utterance]]:
    """Validation, test and independent-test utterances with their augmented audio (for peer models);
    the same draws as the training corpus, so the log-mel frames are identical.  ``test_clean`` and
    ``independent_clean`` are the same sentences without any augmentation (the paper's TIMIT is clean)."""
    voices = speaker_splits(config)
    clean = config.model_copy(update={"clean_share": 1.0})
    splits = {"val": build_split(voices["val"], config.val_utterances, 1, config, "val", keep_audio=True)}
    for split in ("test", "independent"):
        splits[split] = build_split(voices[split], config.test_utterances, 1, config, split, keep_audio=True)
        splits[f"{split}_clean"] = build_split(voices[split], config.test_utterances, 1, clean, split,
                                               keep_audio=True)
    return splits


def clustering_figures(embeddings: np.ndarray, speakers: list[str], cut: float) -> dict[str, float]:
    """MR at a given complete-linkage cut and at the true number of speakers, and the clusters found."""
    tree = metrics.complete_linkage(embeddings)
    at_cut = metrics.clusters_at_cut(tree, cut)
    at_k = metrics.clusters_of_count(tree, len(set(speakers)))
    return {"mr_at_cut": metrics.misclassification_rate(speakers, at_cut),
            "mr_at_true_n": metrics.misclassification_rate(speakers, at_k),
            "clusters_at_cut": len(set(at_cut.tolist())), "speakers": len(set(speakers)),
            "utterances": len(speakers)}


def score_embedder(embed_utterances: Any, splits: dict[str, list[Utterance]],
                   cut: float | None = None) -> dict[str, Any]:
    """Figures on test and independent splits for one embedder; ``cut`` None: chosen on validation."""
    val = splits["val"]
    val_embeddings = embed_utterances(val)
    val_cut, val_mr = metrics.choose_cut(val_embeddings, [u.speaker for u in val])
    chosen = val_cut if cut is None else cut
    result: dict[str, Any] = {"distance_cut": chosen, "val_mr_at_best_cut": val_mr}
    for split in ("test", "independent", "test_clean", "independent_clean"):
        utterances = splits[split]
        result[split] = clustering_figures(embed_utterances(utterances), [u.speaker for u in utterances], chosen)
    return result


def onnx_utterance_embedder(model: Path) -> Any:
    embed = onnx_embedder(model)
    return lambda utterances: metrics.utterance_embeddings(embed, [u.mel for u in utterances])


def resemblyzer_embedder() -> Any:
    """Resemblyzer's pretrained GE2E encoder on the same augmented audio (its own VAD and level preprocessing)."""
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav

    torch.set_num_threads(1)
    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(utterances: list[Utterance]) -> np.ndarray:
        vectors = []
        for utterance in utterances:
            if utterance.audio is None:
                raise ValueError("Resemblyzer needs the audio: build the split with keep_audio=True")
            wav = preprocess_wav(utterance.audio.astype(np.float32), source_sr=16_000)
            vectors.append(encoder.embed_utterance(wav if wav.size > 1600 else utterance.audio))
        return np.stack(vectors)

    return embed


def variant_embedder(train_config: Any, folder: Path) -> Any:
    from models.speakers.train import load_variant, torch_embedder

    embed = torch_embedder(load_variant(train_config, folder))
    return lambda utterances: metrics.utterance_embeddings(embed, [u.mel for u in utterances])


def evaluate(config_path: Path = FOLDER / "train.yaml", manifest_path: Path = FOLDER / "manifest.yaml",
             resemblyzer: bool = True, variants: bool = True,
             splits: dict[str, list[Utterance]] | None = None) -> dict[str, Any]:
    """Every figure of the model card as a dict (see ``evaluation.json``)."""
    from models.speakers.train import load_config

    config = load_config(config_path)
    manifest = load_manifest(manifest_path)
    splits = splits or held_out_splits(config.corpus)
    report: dict[str, Any] = {
        "model": manifest.name, "thresholds": manifest.thresholds, "paper_mr": PAPER_MR,
        "shipped": score_embedder(onnx_utterance_embedder(manifest.onnx_path), splits,
                                  manifest.thresholds["distance_cut"]),
    }
    if variants:
        trained = [loss for loss in config.losses if (FOLDER / "variants" / loss / "checkpoint.pt").is_file()]
        report["loss_variants"] = {loss: score_embedder(variant_embedder(config, FOLDER / "variants" / loss), splits)
                                   for loss in trained}
    if resemblyzer:
        try:
            report["resemblyzer"] = score_embedder(resemblyzer_embedder(), splits)
        except ImportError as error:
            report["resemblyzer"] = {"error": f"resemblyzer is not installed: {error}"}
    return report


def draw(manifest_path: Path, splits: dict[str, list[Utterance]], folder: Path = FOLDER) -> None:
    """The embedding maps of both test splits and the test dendrogram at the shipped cut."""
    from models.speakers.plots import dendrogram_plot, embedding_map

    manifest = load_manifest(manifest_path)
    embed = onnx_utterance_embedder(manifest.onnx_path)
    for split, name in (("test", "embedding_map.png"), ("independent", "embedding_map_independent.png")):
        utterances = splits[split]
        embedding_map(embed(utterances), [u.speaker for u in utterances], folder / name,
                      f"{split} speakers: utterance embeddings (PCA), one colour/marker per speaker")
    test = splits["test"]
    embeddings = embed(test)
    dendrogram_plot(metrics.complete_linkage(embeddings), [u.speaker for u in test],
                    manifest.thresholds["distance_cut"], folder / "dendrogram.png",
                    "40 test speakers x 2 utterances: complete linkage, cosine distance")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=FOLDER / "train.yaml")
    parser.add_argument("--manifest", type=Path, default=FOLDER / "manifest.yaml")
    parser.add_argument("--no-resemblyzer", action="store_true")
    args = parser.parse_args(argv)
    from models.speakers.train import load_config

    splits = held_out_splits(load_config(args.config).corpus)
    draw(args.manifest, splits)
    report = evaluate(args.config, args.manifest, resemblyzer=not args.no_resemblyzer, splits=splits)
    (FOLDER / "evaluation.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

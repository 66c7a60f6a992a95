"""Score the exported face embedder per group (RFW-style), on the independent generator, and dlib's as a peer.

    python -m models.faces.evaluate          # writes evaluation.json, group_roc.png, worst_pairs.png

Verification: within-group genuine/impostor pairs, 10-fold accuracy (threshold chosen on 9 folds), per group and
over all pairs, and the gap best-worst group.  Identification: rank-1 with one gallery picture per identity.
False match / non-match rates per group at the manifest's validation threshold, and the true match
rate at 1 % false matches.  dlib's pretrained ResNet
(``face_recognition_models``) runs on exactly the same crops when it is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.faces import metrics
from models.faces.data import CACHE, Bank, load_split
from models.faces.export import onnx_embed
from models.faces.train import CONFIG, FOLDER, load_config
from models.runtime.manifest import load_manifest

PAIRS_PER_GROUP = 1200
DLIB_THRESHOLD = 0.6  # dlib's documented same-person Euclidean distance
Embed = Callable[[np.ndarray], np.ndarray]


def dlib_embedder() -> Embed | None:
    """dlib's 128-d face descriptor on 150x150 resized crops, or None when dlib or its weights are missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if importlib.util.find_spec("dlib") is None or spec is None or not spec.submodule_search_locations:
        return None
    import dlib
    from PIL import Image

    # the package's __init__ needs pkg_resources (gone from setuptools >= 81), so its file is found directly
    weights = Path(next(iter(spec.submodule_search_locations))) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    model = dlib.face_recognition_model_v1(str(weights))

    def embed(images: np.ndarray) -> np.ndarray:
        chips = [np.asarray(Image.fromarray(image).resize((150, 150), Image.Resampling.BILINEAR)) for image in images]
        return np.array([np.array(d) for d in model.compute_face_descriptor(chips)], np.float32)

    return embed


def cached_peer(embed: Embed, cache: Path) -> Embed:
    """``embed`` remembered on disk per exact image set: the peer is slow (~0.2 s a crop) and never changes."""

    def remembered(images: np.ndarray) -> np.ndarray:
        path = cache / f"dlib-{hashlib.sha256(images.tobytes()).hexdigest()[:16]}.npy"
        if path.is_file():
            return np.load(path)
        embeddings = embed(images)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
        return embeddings

    return remembered


def pair_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, metric: str) -> np.ndarray:
    """Higher means more alike: cosine similarity, or minus the Euclidean distance (dlib's convention)."""
    if metric == "cosine":
        return metrics.cosine_scores(embeddings, first, second)
    return -np.linalg.norm(embeddings[first] - embeddings[second], axis=1)


def score_set(embeddings: np.ndarray, bank: Bank, threshold: float, metric: str = "cosine") -> dict[str, Any]:
    """Per-group and overall verification, identification and error rates for one model on one bank."""
    first, second, same = metrics.make_pairs(bank.labels, bank.groups, np.random.default_rng(1), PAIRS_PER_GROUP)
    scores = pair_scores(embeddings, first, second, metric)
    gallery, probes = metrics.gallery_split(bank.labels)
    result: dict[str, Any] = {"groups": {}, "roc": {}}
    pair_group = bank.groups[first]
    for group in sorted(set(bank.groups.tolist())):
        chosen = pair_group == group
        accuracy, spread, _ = metrics.ten_fold_accuracy(scores[chosen], same[chosen])
        result["groups"][group] = {
            "accuracy": accuracy, "accuracy_std": spread, "pairs": int(chosen.sum()),
            "rank1": metrics.rank1(embeddings, bank.labels, gallery, probes[bank.groups[probes] == group]),
            "tmr_at_fmr_1pct": metrics.tmr_at_fmr(scores[chosen], same[chosen], 0.01),
            **metrics.match_rates(scores[chosen], same[chosen], threshold)}
        result["roc"][group] = metrics.roc_curve(scores[chosen], same[chosen])
    accuracies = [g["accuracy"] for g in result["groups"].values()]
    overall, spread, fold_threshold = metrics.ten_fold_accuracy(scores, same)
    result["overall"] = {"accuracy": overall, "accuracy_std": spread, "ten_fold_threshold": fold_threshold,
                         "rank1": metrics.rank1(embeddings, bank.labels, gallery, probes),
                         "gap_best_worst": max(accuracies) - min(accuracies),
                         "identities": int(bank.labels.max()) + 1, "images": len(bank),
                         **metrics.match_rates(scores, same, threshold)}
    result["pairs"] = (first, second, same, scores)
    return result


def worst_pair_list(result: dict[str, Any], count: int = 6) -> list[tuple[int, int, float, bool]]:
    """The impostor pairs scored highest and the genuine pairs scored lowest."""
    first, second, same, scores = result["pairs"]
    impostors = np.flatnonzero(~same)[np.argsort(-scores[~same])[:count]]
    genuine = np.flatnonzero(same)[np.argsort(scores[same])[:count]]
    return [(int(first[i]), int(second[i]), float(scores[i]), bool(same[i])) for i in [*impostors, *genuine]]


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-worthy part of a result (no arrays)."""
    return {"groups": result["groups"], "overall": result["overall"]}


def threshold_by_group(config_path: Path = CONFIG) -> dict[str, dict[str, dict[str, float]]]:
    """False match and non-match rates per group at both manifest thresholds (1:1 ``same_person_similarity``,
    the task's ``identify_similarity``) on both test banks: the per-group check of the thresholds."""
    config, manifest = load_config(config_path), load_manifest(FOLDER / "manifest.yaml")
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, split in (("synthetic_test", "test"), ("independent_generator", "alt")):
        bank = load_split(config.data, split)
        first, second, same = metrics.make_pairs(bank.labels, bank.groups, np.random.default_rng(1), PAIRS_PER_GROUP)
        scores = pair_scores(onnx_embed(manifest.onnx_path, bank.images), first, second, "cosine")
        for name in ("same_person_similarity", "identify_similarity"):
            cut = manifest.thresholds[name]
            rates[f"{set_name} @ {name} {cut}"] = {
                group: metrics.match_rates(scores[bank.groups[first] == group], same[bank.groups[first] == group], cut)
                for group in sorted(set(bank.groups.tolist()))}
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", default=CONFIG, type=Path)
    parser.add_argument("--no-peer", action="store_true", help="skip dlib even when it is installed")
    parser.add_argument("--thresholds-by-group", action="store_true",
                        help="only print each group's false match / non-match rates at both thresholds")
    args = parser.parse_args(argv)
    if args.thresholds_by_group:
        for where, groups in threshold_by_group(args.config).items():
            print(where, {g: {k: round(v, 4) for k, v in r.items()} for g, r in groups.items()})
        return
    from models.faces.plots import group_rocs, samples, worst_pairs

    config = load_config(args.config)
    manifest = load_manifest(FOLDER / "manifest.yaml")
    threshold = manifest.thresholds["same_person_similarity"]
    banks = {"synthetic_test": load_split(config.data, "test"), "independent_generator": load_split(config.data, "alt")}
    report: dict[str, Any] = {"command": "python -m models.faces.evaluate", "threshold": threshold,
                              "pairs_per_group": PAIRS_PER_GROUP, "models": {}}
    curves, model_results = {}, {}
    dlib = None if args.no_peer else dlib_embedder()
    peers: dict[str, tuple[Embed | None, str, float]] = {
        "ours": (lambda images: onnx_embed(manifest.onnx_path, images), "cosine", threshold),
        "dlib": (cached_peer(dlib, CACHE) if dlib else None, "euclidean", -DLIB_THRESHOLD)}
    for name, (embed, metric, cut) in peers.items():
        if embed is None:
            report["models"][name] = "not installed"
            continue
        report["models"][name] = {}
        for set_name, bank in banks.items():
            started = time.monotonic()
            result = score_set(embed(bank.images), bank, cut, metric)
            report["models"][name][set_name] = {**public(result), "seconds": time.monotonic() - started}
            curves[f"{name}: {set_name}"] = result["roc"]
            model_results[(name, set_name)] = result
            overall = result["overall"]
            print(f"{name} {set_name}: accuracy {overall['accuracy']:.4f}, gap {overall['gap_best_worst']:.4f}, "
                  f"rank-1 {overall['rank1']:.4f}", flush=True)
    (FOLDER / "evaluation.json").write_text(json.dumps(report, indent=1))
    group_rocs(curves, FOLDER / "group_roc.png")
    worst_pairs(banks["synthetic_test"].images, worst_pair_list(model_results[("ours", "synthetic_test")]),
                FOLDER / "worst_pairs.png")
    samples({name: (bank.images, bank.labels) for name, bank in banks.items()}, FOLDER / "samples.png")
    print("wrote", FOLDER / "evaluation.json")


if __name__ == "__main__":
    main()

"""ONNX export of the face embedder, checked against PyTorch, and its manifest with the validation threshold."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.faces import metrics
from models.faces.network import INPUT_SIZE, PIXEL_MEAN, PIXEL_SCALE, Embedder, FaceNet, preprocess
from models.runtime.manifest import Manifest, TensorSpec, write_manifest
from sensors.simulate.faces import crop_template

if TYPE_CHECKING:
    from models.faces.data import Bank
    from models.faces.train import TrainConfig

INPUT_NAME = "face"
OUTPUT_NAME = "embedding"
OPSET = 17


class ExportMismatch(RuntimeError):
    """ONNX Runtime's embeddings differ from PyTorch's beyond the tolerance."""


def export_onnx(net: FaceNet, path: str | Path) -> Path:
    """Write the embedder as one ONNX file: ``face`` (batch, 3, 112, 112) -> ``embedding`` (batch, 128), unit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = Embedder(net).eval()
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return path


def onnx_embed(path: str | Path, images: np.ndarray, threads: int = 1, batch: int = 256) -> np.ndarray:
    """Unit embeddings of uint8 (N, 112, 112, 3) crops through ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: preprocess(images[i : i + batch])})[0]
             for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def check_export(net: FaceNet, path: str | Path, images: np.ndarray, atol: float = 1e-4) -> float:
    """Embed ``images`` with PyTorch and the ONNX file; return the largest difference or raise."""
    actual = onnx_embed(path, images)
    with torch.no_grad():
        expected = Embedder(net).eval()(torch.from_numpy(preprocess(images))).numpy()
    worst = float(np.max(np.abs(actual - expected), initial=0.0))
    if actual.shape != expected.shape or worst > atol:
        raise ExportMismatch(f"{path}: embeddings differ from PyTorch by {worst:.2e} (atol {atol})")
    return worst


def choose_threshold(embeddings: np.ndarray, bank: Bank) -> float:
    """The cosine similarity threshold with the best pair accuracy on the validation identities."""
    first, second, same = metrics.make_pairs(bank.labels, bank.groups, np.random.default_rng(0), 400)
    threshold, _ = metrics.best_threshold(metrics.cosine_scores(embeddings, first, second), same)
    return threshold


def export_with_manifest(net: FaceNet, val: Bank, folder: Path, config: TrainConfig, config_path: Path) -> Path:
    """Export ``model.onnx``, check it against PyTorch, write ``manifest.yaml`` with the validation threshold."""
    path = export_onnx(net, folder / "model.onnx")
    worst = check_export(net, path, val.images[:32])
    print(f"ONNX vs PyTorch: max abs difference {worst:.2e} over 32 crops")
    threshold = choose_threshold(onnx_embed(path, val.images), val)
    root = Path(__file__).resolve().parents[2]
    shown = config_path.resolve()
    shown = shown.relative_to(root) if shown.is_relative_to(root) else shown  # no machine paths in the manifest
    manifest = Manifest(
        name="faces-se-resnet-arcface", task="faces", version="0.1.0", file="model.onnx",
        inputs=[TensorSpec(name=INPUT_NAME, shape=["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        outputs=[TensorSpec(name=OUTPUT_NAME, shape=["batch", config.network.embedding])],
        preprocessing={"crop": f"{INPUT_SIZE}x{INPUT_SIZE} aligned face: landmarks on the template",
                       "template": crop_template().tolist(),
                       "channels": "RGB", "layout": "NCHW", "dtype": "float32",
                       "normalise": f"(x - {PIXEL_MEAN}) / {PIXEL_SCALE}", "code": "models.faces.network.preprocess"},
        postprocessing={"embedding": "already L2-normalised in the graph", "similarity": "cosine (dot product)",
                        "same_person": "similarity >= thresholds.same_person_similarity"},
        thresholds={"same_person_similarity": round(threshold, 4)}, report="README.md",
        training={"command": f"python -m models.faces.train --config {shown}", "seed": config.seed,
                  "data_seed": config.data.seed, "loss": "arcface", "onnx_max_abs_diff": worst, "opset": OPSET},
    )
    return write_manifest(manifest, folder / "manifest.yaml")

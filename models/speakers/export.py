"""ONNX export of the speaker embedder, checked against PyTorch, and its manifest with validation thresholds."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.runtime.manifest import Manifest, TensorSpec, write_manifest
from models.speakers import metrics
from models.speakers.network import Embedder, SpeakerNet
from models.speakers.runtime import features

if TYPE_CHECKING:
    from models.speakers.data import Utterance
    from models.speakers.train import TrainConfig

INPUT_NAME = "mel"
OUTPUT_NAME = "embedding"
OPSET = 17


class ExportMismatch(RuntimeError):
    """ONNX Runtime's embeddings differ from PyTorch's beyond the tolerance."""


def export_onnx(net: SpeakerNet, path: str | Path) -> Path:
    """Write the embedder as one ONNX file: ``mel`` (batch, 40, 128) -> ``embedding`` (batch, 512)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = Embedder(net).eval()
    example = torch.zeros(2, features.SEGMENT_FRAMES, features.N_MELS)
    with warnings.catch_warnings():
        # The TorchScript exporter warns about LSTM batch sizes and its own deprecation; neither applies.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )
    return path


def check_export(net: SpeakerNet, path: str | Path, mel: np.ndarray, atol: float = 1e-4) -> float:
    """Run ``mel`` segments through PyTorch and the ONNX file; return the largest difference or raise."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = np.ascontiguousarray(mel, dtype=np.float32)
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    with torch.no_grad():
        expected = Embedder(net).eval()(torch.from_numpy(inputs)).numpy()
    worst = float(np.max(np.abs(actual - expected), initial=0.0))
    if actual.shape != expected.shape or worst > atol:
        raise ExportMismatch(f"{path}: embeddings differ from PyTorch by {worst:.2e} (atol {atol})")
    return worst


def onnx_embedder(path: str | Path, threads: int = 1) -> metrics.EmbedSegments:
    """A numpy segments -> embeddings function backed by an ONNX Runtime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(segments: np.ndarray) -> np.ndarray:
        outputs = [session.run([OUTPUT_NAME], {INPUT_NAME: segments[i : i + 256]})[0]
                   for i in range(0, len(segments), 256)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    return embed


def choose_thresholds(embed: metrics.EmbedSegments, val: list[Utterance]) -> dict[str, float]:
    """``distance_cut``, ``assign_distance`` and ``change_distance`` chosen on the validation speakers."""
    speakers = [u.speaker for u in val]
    mels = [u.mel for u in val]
    embeddings = metrics.utterance_embeddings(embed, mels)
    cut, _ = metrics.choose_cut(embeddings, speakers)
    assign, _ = metrics.best_threshold(*metrics.centroid_distances(embeddings, speakers))
    change, _ = metrics.best_threshold(*metrics.change_distances(embed, mels, speakers))
    return {"distance_cut": round(cut, 4), "assign_distance": round(assign, 4), "change_distance": round(change, 4)}


def export_with_manifest(net: SpeakerNet, val: list[Utterance], folder: Path, config: TrainConfig,
                         config_path: Path, loss: str) -> Path:
    """Export ``model.onnx``, check it against PyTorch, and write ``manifest.yaml`` with its thresholds."""
    path = export_onnx(net, folder / "model.onnx")
    probe = np.concatenate([features.segments(u.mel) for u in val[:8]])
    worst = check_export(net, path, probe)
    print(f"ONNX vs PyTorch: max abs difference {worst:.2e} over {len(probe)} segments")
    thresholds = choose_thresholds(onnx_embedder(path), val)
    width = 2 * config.network.hidden
    manifest = Manifest(
        name="speakers-bilstm-" + loss.replace("_", "-"), task="speakers", version="1.0.0", file="model.onnx",
        inputs=[TensorSpec(name=INPUT_NAME, shape=["batch", features.SEGMENT_FRAMES, features.N_MELS])],
        outputs=[TensorSpec(name=OUTPUT_NAME, shape=["batch", width])],
        preprocessing={"sample_rate": features.SAMPLE_RATE, "n_fft": features.N_FFT, "hop": features.HOP,
                       "n_mels": features.N_MELS, "log": "log10(1 + 10000 x) of the power mel spectrogram",
                       "segment_frames": features.SEGMENT_FRAMES, "code": "models.speakers.runtime.features"},
        postprocessing={"embedding": "L2-normalise each segment's embedding, average per turn or utterance",
                        "distance": "cosine", "clustering": "complete linkage"},
        thresholds=thresholds, report="README.md",
        training={"command": f"python -m models.speakers.train --config {config_path}", "seed": config.seed,
                  "loss": loss, "onnx_max_abs_diff": worst, "opset": OPSET},
    )
    return write_manifest(manifest, folder / "manifest.yaml")

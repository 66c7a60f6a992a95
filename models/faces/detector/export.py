"""ONNX export of the face detector, checked against PyTorch, and its manifest with the validation threshold."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.faces.detector.network import Exported, FaceCenterNet
from models.faces.runtime.detector import INPUT_HEIGHT, INPUT_WIDTH, PIXEL_MEAN, PIXEL_SCALE, STRIDE, preprocess
from models.runtime.manifest import Manifest, TensorSpec, write_manifest

INPUT_NAME = "image"
OUTPUT_NAMES = ["heatmap", "box", "landmarks"]
OPSET = 17
ATOL = 1e-4


class ExportMismatch(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(net: FaceCenterNet, path: str | Path) -> Path:
    """Write the detector as one ONNX file: ``image`` (batch, 3, 240, 320) -> heatmap, box, landmarks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, INPUT_HEIGHT, INPUT_WIDTH)
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *OUTPUT_NAMES]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(Exported(net).eval(), (example,), str(path), input_names=[INPUT_NAME],
                          output_names=OUTPUT_NAMES, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return path


def onnx_outputs(path: str | Path, images: np.ndarray) -> list[np.ndarray]:
    """The three outputs of the ONNX file for uint8 (N, 240, 320, 3) letterboxed frames, one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [np.asarray(a) for a in session.run(OUTPUT_NAMES, {INPUT_NAME: preprocess(images)})]


def check_export(net: FaceCenterNet, path: str | Path, images: np.ndarray, atol: float = ATOL) -> float:
    """Run ``images`` through PyTorch and the ONNX file; return the largest difference or raise."""
    actual = onnx_outputs(path, images)
    with torch.no_grad():
        expected = [t.numpy() for t in Exported(net).eval()(torch.from_numpy(preprocess(images)))]
    worst = max(float(np.max(np.abs(a - e), initial=0.0)) for a, e in zip(actual, expected, strict=True))
    if any(a.shape != e.shape for a, e in zip(actual, expected, strict=True)) or worst > atol:
        raise ExportMismatch(f"{path}: outputs differ from PyTorch by {worst:.2e} (atol {atol})")
    return worst


def write_detector_manifest(folder: Path, threshold: float, worst: float, training: dict[str, Any]) -> Path:
    """``manifest.yaml`` beside ``model.onnx``: tensors, pre/post-processing, the validation score threshold."""
    cells = [INPUT_HEIGHT // STRIDE, INPUT_WIDTH // STRIDE]
    manifest = Manifest(
        name="faces-centernet-detector", task="faces", version="0.1.0", file="model.onnx",
        inputs=[TensorSpec(name=INPUT_NAME, shape=["batch", 3, INPUT_HEIGHT, INPUT_WIDTH])],
        outputs=[TensorSpec(name="heatmap", shape=["batch", 1, *cells]),
                 TensorSpec(name="box", shape=["batch", 4, *cells]),
                 TensorSpec(name="landmarks", shape=["batch", 10, *cells])],
        preprocessing={"resize": f"letterbox into {INPUT_WIDTH}x{INPUT_HEIGHT}, scaled to fit, top-left, black pad",
                       "channels": "RGB", "layout": "NCHW", "dtype": "float32",
                       "normalise": f"(x - {PIXEL_MEAN}) / {PIXEL_SCALE}", "code": "models.faces.runtime.detector"},
        postprocessing={"stride": STRIDE, "peaks": "3x3 max-pool local maxima of heatmap >= thresholds.score",
                        "box": "centre = (cell + offset) * stride, size = exp(log size) * stride",
                        "landmarks": "centre + offset * (box width, box height); ArcFace order",
                        "nms_iou": 0.5, "code": "models.faces.runtime.detector.decode"},
        thresholds={"score": threshold}, report="README.md",
        training={**training, "onnx_max_abs_diff": worst, "opset": OPSET},
    )
    return write_manifest(manifest, folder / "manifest.yaml")

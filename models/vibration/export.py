"""ONNX export of the vibration autoencoder, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from models.vibration.network import LstmAutoencoder

INPUT_NAME = "sequences"
OUTPUT_NAMES = ("reconstruction", "step_error")


class ExportMismatch(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(model: LstmAutoencoder, path: str | Path, sequence_length: int) -> Path:
    """Write ``model`` as a single-file ONNX graph taking (batch, sequence_length, n_features)."""
    path = Path(path)
    model = model.eval()
    example = torch.zeros(2, sequence_length, model.config.n_features)
    with warnings.catch_warnings():
        # The exporter's own deprecation and tracing chatter is about torch internals, not this model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamo=True,
            dynamic_shapes={"sequences": {0: torch.export.Dim("batch")}},
            external_data=False,
            verbose=False,
        )
    return path


def check_export(
    model: LstmAutoencoder,
    path: str | Path,
    sequences: np.ndarray,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Run ``sequences`` through PyTorch and the ONNX file; return the largest difference or raise."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = np.ascontiguousarray(sequences, dtype=np.float32)
    onnx_outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})
    with torch.no_grad():
        torch_outputs = [tensor.numpy() for tensor in model.eval()(torch.from_numpy(inputs))]
    worst = 0.0
    for name, expected, actual in zip(OUTPUT_NAMES, torch_outputs, onnx_outputs, strict=True):
        if expected.shape != actual.shape or not np.allclose(actual, expected, rtol=rtol, atol=atol):
            raise ExportMismatch(f"{path}: output {name!r} differs from PyTorch (rtol={rtol}, atol={atol})")
        worst = max(worst, float(np.max(np.abs(actual - expected), initial=0.0)))
    return worst

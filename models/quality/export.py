"""ONNX export of the tile network, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from models.quality.network import Probabilities, TileNet
from models.quality.runtime.tiling import RunTiles

INPUT_NAME = "tiles"
OUTPUT_NAMES = ("tile_prob", "cell_prob", "cell_features")


class ExportMismatch(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


def export_onnx(net: TileNet, path: str | Path, tile: int) -> Path:
    """Write the network (with sigmoids) as one ONNX file taking (batch, 1, tile, tile) float32."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = Probabilities(net).eval()
    example = torch.zeros(2, 1, tile, tile)
    with warnings.catch_warnings():
        # The exporter's deprecation and tracing chatter is about torch internals, not this model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamo=True, dynamic_shapes={"tiles": {0: torch.export.Dim("batch")}}, external_data=False,
            verbose=False,
        )
    return path


def check_export(net: TileNet, path: str | Path, tiles: np.ndarray, rtol: float = 1e-4,
                 atol: float = 1e-5) -> float:
    """Run ``tiles`` through PyTorch and the ONNX file; return the largest difference or raise."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = np.ascontiguousarray(tiles, dtype=np.float32)
    onnx_outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})
    with torch.no_grad():
        torch_outputs = [t.numpy() for t in Probabilities(net).eval()(torch.from_numpy(inputs))]
    worst = 0.0
    for name, expected, actual in zip(OUTPUT_NAMES, torch_outputs, onnx_outputs, strict=True):
        if expected.shape != actual.shape or not np.allclose(actual, expected, rtol=rtol, atol=atol):
            raise ExportMismatch(f"{path}: output {name!r} differs from PyTorch (rtol={rtol}, atol={atol})")
        worst = max(worst, float(np.max(np.abs(actual - expected), initial=0.0)))
    return worst


def expose_features(path: str | Path) -> Path:
    """Add the head's input as the ``cell_features`` output of a model exported before it had one.

    Model 1.0.0 was exported with two outputs; this makes its file what :func:`export_onnx` writes
    today without retraining (same weights, same two outputs).
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    if any(output.name == OUTPUT_NAMES[2] for output in graph.output):
        return path
    head = next(node for node in graph.node if node.op_type == "Conv" and node.output[0]
                in {n.input[0] for n in graph.node if n.op_type == "Gather"})
    graph.node.append(onnx.helper.make_node("Identity", [head.input[0]], [OUTPUT_NAMES[2]]))
    graph.output.append(onnx.helper.make_tensor_value_info(
        OUTPUT_NAMES[2], onnx.TensorProto.FLOAT, ["batch", None, None, None]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_runner(path: str | Path, threads: int = 1) -> RunTiles:
    """A tiles -> (tile_prob, cell_prob) function backed by an ONNX Runtime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tile_prob, cell_prob = session.run(list(OUTPUT_NAMES[:2]), {INPUT_NAME: tiles})
        return tile_prob, cell_prob

    return run

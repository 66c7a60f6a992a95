"""A stand-in speaker embedding model with the shipped model's contract, for tests and first DER runs.

A real, small ONNX graph (no training): input ``mel`` float32 [batch, 40, 128], output ``embedding``
float32 [batch, 64].  It averages each band over the segment's 40 frames, removes the mean over bands
(the level), and projects the spectral shape with a fixed random matrix (seeded).  That separates
voices whose pitch and formants differ a lot (espeak-ng's variants at distant pitches) and little else:
a floor to compare the trained BiLSTM with, never a model to ship.  Uses ``onnx`` (the ``train``
extra), so the agent never imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.runtime.manifest import Manifest, TensorSpec, write_manifest
from models.speakers.runtime.features import N_MELS, SEGMENT_FRAMES

DIMENSION = 64
#: thresholds chosen for this stand-in on 6 validation conversations (models.speakers.diarization.draw_scenes seed 99;
#: the DER runs use other seeds): a grid over assign 0.06-0.15, cut 0.1-0.25, change 0.1-0.4
THRESHOLDS = {"distance_cut": 0.15, "assign_distance": 0.15, "change_distance": 0.2}


def standin_graph(seed: int = 0) -> bytes:
    """The ONNX model's bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    projection = (rng.standard_normal((N_MELS, DIMENSION)) / np.sqrt(N_MELS)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["mel", "time_axis"], ["spectrum"], keepdims=0),
        helper.make_node("ReduceMean", ["spectrum", "band_axis"], ["level"], keepdims=1),
        helper.make_node("Sub", ["spectrum", "level"], ["shape"]),
        helper.make_node("MatMul", ["shape", "projection"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "speakers-standin",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", SEGMENT_FRAMES, N_MELS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIMENSION])],
        [numpy_helper.from_array(projection, "projection"),
         numpy_helper.from_array(np.array([1], np.int64), "time_axis"),
         numpy_helper.from_array(np.array([1], np.int64), "band_axis")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edge-agent")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_standin(folder: Path, thresholds: dict[str, float] | None = None) -> Path:
    """Write ``model.onnx`` and ``manifest.yaml`` into ``folder``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(standin_graph())
    manifest = Manifest(
        name="speakers-standin", task="speakers", version="0.0.1",
        inputs=[TensorSpec(name="mel", shape=["batch", SEGMENT_FRAMES, N_MELS])],
        outputs=[TensorSpec(name="embedding", shape=["batch", DIMENSION])],
        preprocessing={"features": "models.speakers.runtime.features: 16 kHz, log-mel 128, segments of 40 frames"},
        thresholds=dict(thresholds or THRESHOLDS),
        training={"command": "python -m models.speakers.standin OUT (no training: a fixed projection)"})
    return write_manifest(manifest, folder / "manifest.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write model.onnx and manifest.yaml into")
    print(write_standin(parser.parse_args().out))


if __name__ == "__main__":
    main()

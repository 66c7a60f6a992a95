"""Benchmark: quality task throughput on camera frames vs a bare ONNX Runtime loop doing the same work.

    python -m tests.benchmarks.bench_quality

Both sides take the same JPEG frames, decode them, cut the same 64 px tiles, run the same
ONNX model on one thread and take the maximum; the task also stitches the heat map, builds
the event and (for rejects) the JPEG crop.  Target: task throughput >= 0.9x the bare loop.
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog
from PIL import Image

from agent.tasks.base import TaskContext
from agent.tasks.quality.task import QualityConfig, QualityTask
from models.runtime import load_manifest, load_model
from sensors.simulate.camera import CameraSimulator
from sensors.wire import SensorMessage

MANIFEST = Path(__file__).resolve().parents[2] / "models" / "quality" / "manifest.yaml"


def bare_loop(session: ort.InferenceSession, messages: list[SensorMessage], pre: dict[str, Any]) -> float:
    """Seconds for decode + tiling + inference + max over all frames, with nothing else."""
    tile, stride = int(pre["tile"]), int(pre["stride"])
    mean, std = pre["normalisation"]["mean"], pre["normalisation"]["std"]
    started = time.perf_counter()
    for message in messages:
        image = np.asarray(Image.open(io.BytesIO(bytes(message.data))).convert("L"))
        height, width = image.shape
        ys = [*range(0, height - tile, stride), height - tile]
        xs = [*range(0, width - tile, stride), width - tile]
        windows = np.lib.stride_tricks.sliding_window_view(image, (tile, tile))
        grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
        batch = ((windows[grid_y.ravel(), grid_x.ravel()].astype(np.float32) / 255.0 - mean) / std)[:, None]
        tile_prob, _ = session.run(None, {"tiles": batch})
        float(tile_prob.max())
    return time.perf_counter() - started


def task_loop(task: QualityTask, messages: list[SensorMessage]) -> float:
    started = time.perf_counter()
    for message in messages:
        task.process(message)
    return time.perf_counter() - started


def run(frames: int = 40, rounds: int = 3, seed: int = 5) -> dict[str, Any]:
    """Best-of-``rounds`` frames per second for the task and the bare loop, interleaved."""
    camera = CameraSimulator("bench-camera", defect_rate=0.1, seed=seed)
    messages = [camera.frame(i, 1 + i) for i in range(frames)]
    context = TaskContext("bench", Path("/tmp"), load_model, structlog.get_logger("bench"))
    task = QualityTask(QualityConfig(tile_batch=128), context)
    manifest = load_manifest(MANIFEST)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(manifest.onnx_path), options, providers=["CPUExecutionProvider"])
    task_loop(task, messages[:2])
    bare_loop(session, messages[:2], manifest.preprocessing)
    task_s, bare_s = [], []
    for _ in range(rounds):
        task_s.append(task_loop(task, messages))
        bare_s.append(bare_loop(session, messages, manifest.preprocessing))
    task.close()
    task_fps, bare_fps = frames / min(task_s), frames / min(bare_s)
    result = {"frames": frames, "rounds": rounds, "task_fps": round(task_fps, 2), "bare_fps": round(bare_fps, 2),
              "ratio": round(task_fps / bare_fps, 3), "target_ratio": 0.9,
              "task_ms_per_frame": round(1000 / task_fps, 2), "bare_ms_per_frame": round(1000 / bare_fps, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()

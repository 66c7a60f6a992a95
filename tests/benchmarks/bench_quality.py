"""Benchmark: quality task throughput on camera frames vs a bare ONNX Runtime loop doing the same work.

    python -m tests.benchmarks.bench_quality

Both sides take the same JPEG frames, decode them, cut the same 64 px tiles, run the same
ONNX model on one thread and take the maximum; the task also stitches the heat map, builds
the event and (for rejects) the JPEG crop.  Target: task throughput >= 0.9x the bare loop.
A second task has learned its station's normal: the time it adds per frame (target <= 20 ms) and
the memory its learning and its bank take (target <= 100 MB, numpy allocations traced) are printed.
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog
from PIL import Image

from agent.daemon import single_threaded_blas
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
        tile_prob, _ = session.run(["tile_prob", "cell_prob"], {"tiles": batch})
        float(tile_prob.max())
    return time.perf_counter() - started


def task_loop(task: QualityTask, messages: list[SensorMessage]) -> float:
    started = time.perf_counter()
    for message in messages:
        task.process(message)
    return time.perf_counter() - started


def learned_task(context: TaskContext, learn_frames: int, seed: int) -> tuple[QualityTask, int]:
    """A task whose camera has learned its station from good frames, and the learning's peak traced bytes."""
    task = QualityTask(QualityConfig(tile_batch=128, station_normal=True, learn_frames=learn_frames), context)
    good = CameraSimulator("bench-camera", defect_rate=0.0, seed=seed + 1)
    tracemalloc.start()
    for index in range(learn_frames):
        task.process(good.frame(index, 1 + index))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return task, peak


def run(frames: int = 40, rounds: int = 3, seed: int = 5, learn_frames: int = 100) -> dict[str, Any]:
    """Best-of-``rounds`` frames per second for the task (without and with a station) and the bare loop."""
    single_threaded_blas()  # as the agent runs its workers
    camera = CameraSimulator("bench-camera", defect_rate=0.1, seed=seed)
    messages = [camera.frame(learn_frames + i, 1 + learn_frames + i) for i in range(frames)]
    state = tempfile.TemporaryDirectory()
    context = TaskContext("bench", Path(state.name), load_model, structlog.get_logger("bench"))
    task = QualityTask(QualityConfig(tile_batch=128, station_normal=False), context)
    with_station, learn_peak = learned_task(context, learn_frames, seed)
    normal = with_station.stations.by_camera["bench-camera"].normal
    assert normal is not None
    manifest = load_manifest(MANIFEST)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(manifest.onnx_path), options, providers=["CPUExecutionProvider"])
    task_loop(task, messages[:2])
    bare_loop(session, messages[:2], manifest.preprocessing)
    task_s, station_s, bare_s = [], [], []
    for _ in range(rounds):
        task_s.append(task_loop(task, messages))
        station_s.append(task_loop(with_station, messages))
        bare_s.append(bare_loop(session, messages, manifest.preprocessing))
    task.close()
    with_station.close()
    state.cleanup()
    task_fps, bare_fps, station_fps = frames / min(task_s), frames / min(bare_s), frames / min(station_s)
    kept = (normal.bank, normal.components, normal.bank_sq, normal.radius, normal.inverse)
    bank_bytes = sum(array.nbytes for array in kept)
    result = {"frames": frames, "rounds": rounds, "task_fps": round(task_fps, 2), "bare_fps": round(bare_fps, 2),
              "ratio": round(task_fps / bare_fps, 3), "target_ratio": 0.9,
              "task_ms_per_frame": round(1000 / task_fps, 2), "bare_ms_per_frame": round(1000 / bare_fps, 2),
              "station_ms_added_per_frame": round(1000 / station_fps - 1000 / task_fps, 2),
              "target_station_ms": 20, "station_bank_mb": round(bank_bytes / 2**20, 2),
              "station_learning_peak_mb": round(learn_peak / 2**20, 1), "target_station_mb": 100}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()

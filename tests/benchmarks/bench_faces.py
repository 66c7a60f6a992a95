"""Benchmark: the faces task on 640x480 camera frames with 1-3 faces vs a bare ONNX Runtime loop doing the same work.

    python -m tests.benchmarks.bench_faces

Both sides decode the same JPEG frames, letterbox them, run the same detector and, on the same
aligned crops, the same embedder with the same threads; the task also finds the peaks, aligns,
tracks, averages, matches against the gallery and builds events.  Target (issue 12): 10 cameras at
5 frames/s (50 frames/s) on this machine's CPU, and task throughput >= 0.9x the bare loop.
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog
from PIL import Image

from agent.tasks.base import TaskContext
from agent.tasks.faces.config import FacesConfig
from agent.tasks.faces.demo_gallery import DEMO_FACES, KEY_FILE
from agent.tasks.faces.task import FacesTask
from models.faces.runtime.detector import letterbox, preprocess
from models.faces.runtime.embedder import preprocess as embedder_input
from models.runtime import OnnxRuntimeConfig, load_model
from sensors.simulate.entrance import held_out_identities
from sensors.simulate.faces import render_scene
from sensors.wire import Encoding, Kind, SensorMessage

THREADS = 2
CAMERAS, FPS = 10, 5.0


def frames(count: int = 60, seed: int = 5) -> list[bytes]:
    """JPEG frames of 640x480 scenes with 1-3 held-out people each."""
    rng = np.random.default_rng(seed)
    people = held_out_identities()
    payloads = []
    for _ in range(count):
        chosen = [people[int(i)] for i in rng.choice(len(people), int(rng.integers(1, 4)), replace=False)]
        image, _ = render_scene(chosen, rng)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        payloads.append(buffer.getvalue())
    return payloads


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bare_loop(payloads: list[bytes], landmarks: list[list[np.ndarray]], detector: ort.InferenceSession,
              embedder: ort.InferenceSession, align: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Decode, letterbox, detect; align the faces the task found and embed them: no decoding of the maps."""
    detector_input, embedder_name = detector.get_inputs()[0].name, embedder.get_inputs()[0].name
    for payload, marks in zip(payloads, landmarks, strict=True):
        image = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
        picture, _ = letterbox(image)
        detector.run(None, {detector_input: preprocess(picture[None])})
        if marks:
            crops = np.stack([align(image, m) for m in marks])
            embedder.run(None, {embedder_name: embedder_input(crops)})


def run(rounds: int = 3) -> dict[str, Any]:
    """Best-of-``rounds`` frames per second for the task and the bare loop, interleaved."""
    payloads = frames()
    messages = [SensorMessage(f"door-{i % CAMERAS:02d}", Kind.FRAME, i // CAMERAS, i, payload, 0.0, Encoding.JPEG, {})
                for i, payload in enumerate(payloads)]
    backend = OnnxRuntimeConfig(intra_op_threads=THREADS)
    context = TaskContext("bench", Path("/tmp"), lambda path: load_model(path, backend), structlog.get_logger("bench"))
    task = FacesTask(FacesConfig(enabled=True, gallery=DEMO_FACES, key_file=KEY_FILE), context)
    found = [task.detector.detect(np.asarray(Image.open(io.BytesIO(p)).convert("RGB"))) for p in payloads]
    marks = [[face.landmarks for face in faces[: task.config.max_faces]] for faces in found]
    detector = session(task.detector.model.manifest.onnx_path)
    embedder = session(task.embedder.model.manifest.onnx_path)
    task_s, bare_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for message in messages:
            task.process(message)
        task_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare_loop(payloads, marks, detector, embedder, task.embedder.align)
        bare_s.append(time.perf_counter() - started)
    task.close()
    task_fps, bare_fps = len(messages) / min(task_s), len(messages) / min(bare_s)
    result = {"frames": len(messages), "faces": sum(len(m) for m in marks), "threads": THREADS,
              "task_frames_per_s": round(task_fps, 1), "bare_frames_per_s": round(bare_fps, 1),
              "ratio": round(task_fps / bare_fps, 3), "target_ratio": 0.9,
              "needed_frames_per_s": CAMERAS * FPS, "share_of_target": round(task_fps / (CAMERAS * FPS), 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()

"""Benchmark: the symbols task on a 2500x3500 page photo vs a bare ONNX Runtime loop doing the same work.

    python -m tests.benchmarks.bench_symbols

Both sides decode the same JPEG, rescale it to the model's staff space (the bare loop is told the
scale the task estimated), cut the same tiles and run the same ONNX model with the same threads; the
task also estimates the staff space, post-processes every tile (components, classes, boxes), keeps
each symbol once and builds the event (overlay off: its JPEG is reported apart).  Targets: a page in
under 2 s, task throughput >= 0.9x the bare loop, memory added by the task under 400 MB.
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog
from PIL import Image

from agent.tasks.base import TaskContext
from agent.tasks.symbols.config import SymbolsConfig
from agent.tasks.symbols.simulate import PAGES
from agent.tasks.symbols.task import SymbolsTask
from models.runtime import OnnxRuntimeConfig, load_model
from models.symbols.runtime.pages import PageGeometry, rescale, tile_starts
from sensors.wire import Encoding, Kind, SensorMessage

THREADS = 2


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def big_page(width: int = 2500, height: int = 3500) -> bytes:
    """A shipped page photo enlarged to a 2500x3500 camera frame, as JPEG."""
    page = Image.open(PAGES / "page-1.jpg").convert("L").resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    page.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def bare_page(session: ort.InferenceSession, payload: bytes, scale: float, geometry: PageGeometry) -> None:
    image = rescale(np.asarray(Image.open(io.BytesIO(payload)).convert("L")), scale)
    height, width = image.shape
    padded = np.full((max(height, geometry.tile), max(width, geometry.tile)), 255, np.uint8)
    padded[:height, :width] = image
    places = [(y, x) for y in tile_starts(padded.shape[0], geometry.tile, geometry.overlap)
              for x in tile_starts(padded.shape[1], geometry.tile, geometry.overlap)]
    for first in range(0, len(places), geometry.batch):
        tiles = np.stack([padded[y : y + geometry.tile, x : x + geometry.tile] for y, x in
                          places[first : first + geometry.batch]])
        session.run(None, {"page": (tiles.astype(np.float32) / 255.0)[:, None]})


def run(rounds: int = 3) -> dict[str, Any]:
    """Best-of-``rounds`` seconds per page for the task and the bare loop, interleaved."""
    payload = big_page()
    message = SensorMessage("bench-pages", Kind.FRAME, 0, 1, payload, 0.0, Encoding.JPEG, {})
    before = rss_mb()
    backend = OnnxRuntimeConfig(intra_op_threads=THREADS)
    context = TaskContext("bench", Path("/tmp"), lambda path: load_model(path, backend),
                          structlog.get_logger("bench"))
    task = SymbolsTask(SymbolsConfig(overlay=False), context)
    body = task.process(message)[0].body
    added = rss_mb() - before
    scale = task.geometry.staff_space / body["staff_space"] if body["staff_space"] else 1.0
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(task.model.manifest.onnx_path), options, providers=["CPUExecutionProvider"])
    bare_page(session, payload, scale, task.geometry)
    task_s, bare_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        task.process(message)
        task_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare_page(session, payload, scale, task.geometry)
        bare_s.append(time.perf_counter() - started)
    overlay = SymbolsTask(SymbolsConfig(overlay=True), context)
    started = time.perf_counter()
    overlay.process(message)
    with_overlay = time.perf_counter() - started
    task.close()
    overlay.close()
    result = {"page": "2500x3500 JPEG", "symbols": body["total"], "staff_space": body["staff_space"],
              "tiles": body["tiles"], "threads": THREADS, "task_s_per_page": round(min(task_s), 3),
              "bare_s_per_page": round(min(bare_s), 3), "ratio": round(min(bare_s) / min(task_s), 3),
              "target_ratio": 0.9, "target_s_per_page": 2.0, "task_with_overlay_s": round(with_overlay, 3),
              "memory_added_mb": round(added, 1), "target_memory_mb": 400}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run()

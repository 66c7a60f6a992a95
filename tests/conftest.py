"""Shared fixtures and helpers: a real Mosquitto broker on a free port, a tiny real ONNX model and the probe
task that runs it, agent configs around them. The probe task registers itself when this module is imported
(a daemon subprocess gets it with ``plugins: [tests.conftest]``); generic helpers live in ``agent.testing``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pydantic import Field

from agent.events import EventDraft, ModelRef
from agent.tasks import register_task
from agent.tasks.base import RejectedInput, Task, TaskConfig, TaskContext
from agent.testing import MOSQUITTO, Broker, free_port
from agent.windowing import Window
from models.runtime import Manifest, write_manifest
from models.runtime.manifest import TensorSpec
from sensors.wire import Kind, SensorMessage

__all__ = ["MOSQUITTO", "Broker", "ProbeTask", "agent_config", "free_port", "vibration_chunk", "write_energy_model"]


@pytest.fixture(autouse=True, scope="session")
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agents (and the CLI subprocesses tests start) keep their per-device locks in a folder of this run."""
    os.environ["EDGE_AGENT_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("run"))
    yield
    os.environ.pop("EDGE_AGENT_RUNTIME_DIR", None)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto broker on a free port, stopped after the test."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto package")
    running = Broker(tmp_path, free_port()).start()
    yield running
    running.stop()


def write_energy_model(folder: Path) -> Path:
    """An ONNX model computing the mean square of its input (1, n, channels) -> (1,); returns its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["squared"]),
         helper.make_node("ReduceMean", ["squared"], ["energy"], keepdims=0)],
        "energy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n", "c"])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest(name="energy-probe", task="probe", version="1.0.0",
                        inputs=[TensorSpec(name="x", shape=[1, "n", "c"])],
                        outputs=[TensorSpec(name="energy", shape=[])], thresholds={"alarm": 1.0})
    return write_manifest(manifest, folder / "manifest.yaml")


class ProbeConfig(TaskConfig):
    """Settings of the probe task."""

    threshold: float = Field(default=1.0, description="energy above which an alarm is raised")
    delay_s: float = Field(default=0.0, ge=0, description="extra time per item, to simulate a slow model")
    fatal: bool = Field(default=False, description="end the worker thread on every item, to simulate a crash")


class ProbeTask(Task):
    """Runs the energy model on every window or raw frame; alarms when energy exceeds the threshold."""

    name: ClassVar[str] = "probe"
    kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.VIBRATION, Kind.AUDIO, Kind.FRAME})
    config_type: ClassVar[type[TaskConfig]] = ProbeConfig

    def __init__(self, config: TaskConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        if config.model is None:
            raise ValueError("probe task needs a model")
        self.model = context.load_model(config.model)
        self.settings: Any = config

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if isinstance(item, Window):
            samples, sensor, when = item.samples, item.sensor_id, item.start_ns
        elif isinstance(item.data, np.ndarray):
            samples, sensor, when = item.data.reshape(item.data.shape[0], -1) / 255.0, item.sensor_id, \
                item.timestamp_ns
        else:
            raise RejectedInput("probe takes raw frames only")
        if self.settings.delay_s:
            time.sleep(self.settings.delay_s)  # a slow model is what this setting simulates
        if self.settings.fatal:
            raise SystemExit("probe: simulated fatal error in the worker thread")
        (energy,) = self.model.run({"x": samples[None].astype(np.float32)})
        score = float(energy)
        if score <= self.settings.threshold:
            return []
        return [EventDraft("energy_high", sensor, when, "alarm", score, self.models()[0],
                           {"threshold": self.settings.threshold})]

    def models(self) -> list[ModelRef]:
        return [ModelRef(self.model.manifest.name, self.model.manifest.version)]

    def close(self) -> None:
        self.model.close()


register_task(ProbeTask)


def vibration_chunk(sensor: str, seq: int, amplitude: float, samples: int = 1000,
                    rate: float = 1000.0) -> SensorMessage:
    """A chunk of a sine of the given amplitude (energy = amplitude**2 / 2)."""
    t = (np.arange(samples) + seq * samples) / rate
    data = (amplitude * np.sin(2 * np.pi * 50 * t)).astype(np.float32)[:, None]
    return SensorMessage(sensor, Kind.VIBRATION, seq, 1_700_000_000_000_000_000 + seq * 10**9, data, rate)


def agent_config(state_dir: Path, model: Path, sources: list[dict[str, Any]], sinks: list[dict[str, Any]],
                 **extra: Any) -> dict[str, Any]:
    """A config dict with the probe task on 1 s windows."""
    return {"device": "test-device", "state_dir": str(state_dir), "sources": sources, "sinks": sinks,
            "log": {"level": "info", "format": "json"}, "stats_interval_s": 1,
            "tasks": {"probe": {"model": str(model), "window_s": 1.0, "hop_s": 1.0,
                                **extra.pop("probe", {})}},
            **extra}

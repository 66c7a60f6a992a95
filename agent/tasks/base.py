"""The task interface: what every task pipeline (vibration, quality, ...) implements.

A task receives either a decoded camera frame (:class:`SensorMessage`) or a window
of a continuous stream (:class:`Window`), runs its model and returns event drafts.
It never sees the network, the outbox or other tasks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

from agent.events import EventDraft, ModelRef
from agent.windowing import Window
from models.runtime import Model
from sensors.wire import Kind, SensorMessage


class RejectedInput(ValueError):
    """Input that is well-formed on the wire but unusable by the task; counted per sensor."""


class TaskConfig(BaseModel):
    """Settings every task has; each task extends it with its own fields."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(default=True, description="run this task")
    model: Path | None = Field(default=None, description="model manifest (manifest.yaml) or its folder")
    sensors: list[str] = Field(default=["*"], description="sensor id patterns (fnmatch) this task takes")
    queue_size: int = Field(default=64, ge=1, le=100_000, description="bounded input queue length")
    window_s: float = Field(default=1.0, gt=0, le=3600, description="window length for continuous streams")
    hop_s: float = Field(default=1.0, gt=0, le=3600, description="hop between windows for continuous streams")


@dataclass
class TaskContext:
    """What the agent gives a task: who it is, where to keep state, how to load models."""

    device: str
    state_dir: Path
    load_model: Callable[[Path], Model]
    log: structlog.stdlib.BoundLogger


class Task(abc.ABC):
    """One task pipeline: preprocess -> model -> postprocess -> decide."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[Kind]]
    config_type: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig, context: TaskContext) -> None:
        self.config = config
        self.context = context

    @abc.abstractmethod
    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        """Handle one frame or window; raise RejectedInput for unusable input."""

    def tick(self, now_ns: int) -> list[EventDraft]:
        """Called about once a second from the task's worker (health scores, offline checks)."""
        return []

    @abc.abstractmethod
    def models(self) -> list[ModelRef]:
        """The models this task runs (reported in stats and events)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Persist state and release models."""

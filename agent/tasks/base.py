"""The task interface: what every task plug-in (vibration, quality, ...) implements.

A task receives either a decoded camera frame (:class:`SensorMessage`) or a window
of a continuous stream (:class:`Window`), runs its models and returns event drafts.
It never sees the network, the outbox or other tasks.  Everything else a task brings
is declared on its class, so that one folder and one registry line add a task
(see docs/adding-a-task.md):

- ``config_type``: its typed settings (a :class:`TaskConfig`); fields typed :data:`ModelPath`
  are model manifests, resolved like the shipped ones, any number of them;
- ``events``: the pydantic models of its event bodies (schema and docs are generated from them);
- ``simulation``: the config model of its simulated streams for the demo (a :class:`Simulation`);
- ``commands``: its maintenance commands (``edge-agent reset-baseline`` is the vibration task's);
- ``check``: its preflight, run by ``validate-config`` and by ``run`` before anything is opened;
- ``warnings``: settings that are allowed but probably wrong (printed by ``validate-config``);
- ``snapshot_stream``: whether a sensor's stream is a series of bursts, one window each.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar, get_args, get_origin

import structlog
from pydantic import BaseModel, ConfigDict, Field

from agent.events import EventBody, EventDraft, ModelRef
from agent.reorder import DEFAULT_REORDER_CHUNKS
from agent.windowing import Window

if TYPE_CHECKING:
    from models.runtime import Model
from sensors.errors import RejectedInput
from sensors.wire import Kind, SensorMessage

__all__ = ["Command", "ModelPath", "RejectedInput", "ShippedPath", "Simulation", "Task", "TaskConfig", "TaskContext"]


class _ModelManifest:
    """Marks a config field as a model manifest path (see :data:`ModelPath`)."""


#: a path to a model manifest (or its folder); relative paths are looked up next to the config, then in the
#: installed package, so ``models/vibration`` names the shipped model in a checkout and after ``pip install``
ModelPath = Annotated[Path, _ModelManifest()]


class _Shipped:
    """Marks a config field as a file or folder looked up like a model path, but not a manifest."""


#: a path resolved like :data:`ModelPath` (next to the config, then in the installed package), for data a task
#: reads that is not a model: the demo's face gallery and its key
ShippedPath = Annotated[Path, _Shipped()]


def _is_marked(annotation: Any, *marks: type) -> bool:
    if get_origin(annotation) is Annotated:
        return any(isinstance(mark, marks) for mark in get_args(annotation)[1:])
    return any(_is_marked(arg, *marks) for arg in get_args(annotation))


class TaskConfig(BaseModel):
    """Settings every task has; each task extends it with its own fields."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(default=True, description="run this task")
    model: ModelPath | None = Field(default=None, description="model manifest (manifest.yaml) or its folder")
    sensors: list[str] = Field(default=["*"], description="sensor id patterns (fnmatch) this task takes")
    queue_size: int = Field(default=64, ge=1, le=100_000, description="bounded input queue length")
    window_s: float = Field(default=1.0, gt=0, le=3600, description="window length for continuous streams")
    hop_s: float = Field(default=1.0, gt=0, le=3600, description="hop between windows for continuous streams")
    reorder_chunks: int = Field(default=DEFAULT_REORDER_CHUNKS, ge=0, le=64,
                                description="chunks of a continuous stream held while they arrive ahead of a "
                                            "sequence gap, fed in order once it fills (0: none held)")

    def model_paths(self) -> dict[str, Path]:
        """Every model manifest this config names, by field name (fields annotated ``ModelPath``)."""
        return self._paths(_ModelManifest)

    def shipped_paths(self) -> dict[str, Path]:
        """Every path field resolved like a model path (``ModelPath`` and ``ShippedPath``), by field name."""
        return self._paths(_ModelManifest, _Shipped)

    def _paths(self, *marks: type) -> dict[str, Path]:
        return {name: getattr(self, name) for name, info in type(self).model_fields.items()
                if getattr(self, name) is not None and _is_marked(info.annotation, *marks)}


@dataclass
class TaskContext:
    """What the agent gives a task: who it is, where to keep state, how to load models."""

    device: str
    state_dir: Path
    load_model: Callable[[Path], Model]
    log: structlog.stdlib.BoundLogger


class Simulation(BaseModel):
    """The config of a task's simulated sensors in the demo; ``streams`` yields their messages."""

    model_config = ConfigDict(extra="forbid")

    @abc.abstractmethod
    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        """One (sensor id, timestamped messages) per simulated sensor, timestamps from ``start_ns``."""


@dataclass(frozen=True)
class Command:
    """A maintenance command a task adds to ``edge-agent`` (e.g. ``reset-baseline``)."""

    name: str
    help: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: run(args, config) -> exit code; ``config`` is the validated AgentConfig of ``--config``
    run: Callable[[argparse.Namespace, Any], int]


C = TypeVar("C", bound=TaskConfig)


class Task(abc.ABC, Generic[C]):
    """One task pipeline: preprocess -> model -> postprocess -> decide."""

    name: ClassVar[str]
    kinds: ClassVar[frozenset[Kind]]
    config_type: ClassVar[type[TaskConfig]] = TaskConfig
    events: ClassVar[tuple[type[EventBody], ...]] = ()
    simulation: ClassVar[type[Simulation] | None] = None
    commands: ClassVar[tuple[Command, ...]] = ()
    #: whether the files of the task's state folder may be published for a standby (``cluster.publish_state``);
    #: off for state that must not leave the box (biometric data)
    replicated_state: ClassVar[bool] = True

    def __init__(self, config: C, context: TaskContext) -> None:
        self.config: C = config
        self.context = context

    @classmethod
    def check(cls, config: C) -> None:
        """Preflight (``validate-config``, and ``run`` before it connects): raise an EdgeAgentError for what
        would stop this task from starting. The default loads and verifies every model manifest it names;
        a task with its own needs (thresholds the model must have, ...) extends it."""
        from models.runtime import load_manifest

        for path in config.model_paths().values():
            load_manifest(path)

    @classmethod
    def warnings(cls, config: C) -> list[str]:
        """Settings that are allowed but probably wrong (``validate-config`` prints them, ``run`` logs them)."""
        return []

    def snapshot_stream(self, sensor: str) -> bool:
        """Whether the sensor's continuous stream is a series of snapshots, one window per burst (the agent's
        :class:`~agent.windowing.Windower` asks when the sensor's first chunk comes); streams are continuous
        unless a task says otherwise."""
        return False

    @abc.abstractmethod
    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        """Handle one frame or window; raise RejectedInput for unusable input."""

    def tick(self, now_ns: int) -> list[EventDraft]:
        """Called about once a second from the task's worker (health scores, offline checks)."""
        return []

    def forget(self, sensor: str) -> None:
        """Drop what is kept for the sensor (it was least recently seen of more than ``max_sensors``); the
        agent calls it from the task's worker thread, so it needs no locking."""

    @abc.abstractmethod
    def models(self) -> list[ModelRef]:
        """The models this task runs (reported in stats and events)."""

    def close(self) -> None:
        """Persist state and release models."""

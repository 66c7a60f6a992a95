"""The level task: an alarm when a microphone window is louder than a threshold (no model needed)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskConfig
from agent.windowing import Window
from sensors.wire import Kind, SensorMessage
from tests.plugin_task import commands, events, simulate


class LevelConfig(TaskConfig):
    """Settings of the level task."""

    threshold_dbfs: float = Field(default=-20.0, le=0, description="raise loud_sound above this RMS level")


class LevelTask(Task[LevelConfig]):
    """Microphone windows -> ``loud_sound`` events."""

    name = "level"
    kinds = frozenset({Kind.AUDIO})
    config_type = LevelConfig
    events = events.EVENTS
    simulation = simulate.MicrophoneSimulation
    commands = commands.COMMANDS

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, Window):
            raise RejectedInput("level takes windows of a microphone stream")
        rms = float(np.sqrt(np.mean(np.square(item.samples, dtype=np.float64))))
        level = 20 * np.log10(max(rms, 1e-12))
        if level <= self.config.threshold_dbfs:
            return []
        body = events.LoudSound(level_dbfs=round(level, 1), threshold_dbfs=self.config.threshold_dbfs)
        return [body.draft(item.sensor_id, item.start_ns, "warning", round(level, 1), self.models()[0])]

    def models(self) -> list[ModelRef]:
        return [ModelRef("rms-level", "builtin")]

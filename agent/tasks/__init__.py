"""The task registry: task name -> the Task class that runs it, imported when first asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.tasks.base import Task

# name -> "module:Class"; a task's module is only imported when the registry is read
TASKS: dict[str, str] = {
    "vibration": "agent.tasks.vibration:VibrationTask",
    "quality": "agent.tasks.quality:QualityTask",
}
_extra: dict[str, type[Task]] = {}


def task_types() -> dict[str, type[Task]]:
    """All registered task classes by name."""
    found: dict[str, type[Task]] = {}
    for name, target in TASKS.items():
        module, _, attribute = target.partition(":")
        found[name] = getattr(importlib.import_module(module), attribute)
    return {**found, **_extra}


def register_task(task: type[Task]) -> None:
    """Register a task class at run time (plugins, and tests that bring their own task)."""
    from agent.config import agent_model, tasks_model

    _extra[task.name] = task
    tasks_model.cache_clear()
    agent_model.cache_clear()

"""The task registry: one line per task plug-in (name -> its Task class), imported when first asked for.

A task's folder (``agent/tasks/<name>/``) holds everything the agent needs of it: config, event
bodies, demo simulation, maintenance commands and the Task class; see docs/adding-a-task.md.
Third-party tasks register at run time with :func:`register_task` from a module named in the
config's ``plugins:`` list.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from sensors.plugins import Registry

if TYPE_CHECKING:
    from agent.tasks.base import Command, Task

TASKS: Registry[Task[Any]] = Registry("task", {
    "vibration": "agent.tasks.vibration.task:VibrationTask",
    "quality": "agent.tasks.quality.task:QualityTask",
    "speakers": "agent.tasks.speakers.task:SpeakersTask",
    "symbols": "agent.tasks.symbols.task:SymbolsTask",
    "faces": "agent.tasks.faces.task:FacesTask",
})


def task_types() -> dict[str, type[Task[Any]]]:
    """All registered task classes by name."""
    return TASKS.all()


def register_task(task: type[Task[Any]]) -> None:
    """Register a task class at run time (plugins, and tests that bring their own task)."""
    TASKS.register(task.name, task)


def task_commands() -> list[Command]:
    """Every task's maintenance commands: ``COMMANDS`` of each task folder's optional ``commands.py`` (a light
    module, so ``edge-agent --help`` does not load the models' libraries), and of run-time registered tasks."""
    found: list[Command] = []
    for target in TASKS.entries.values():
        module = target.partition(":")[0].rpartition(".")[0] + ".commands"
        if importlib.util.find_spec(module) is not None:
            found.extend(importlib.import_module(module).COMMANDS)
    for task in TASKS.extra().values():
        found.extend(task.commands)
    return found

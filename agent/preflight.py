"""Preflight: what ``run`` needs, checked before it opens a connection or a file (``validate-config`` runs it too).

Each enabled task checks its own models and thresholds (:meth:`Task.check`), each source its own
inputs (:meth:`Source.check`), so this module knows no task or source. The generic checks are the
secret and TLS files the configuration names and the state directory. Every problem is an
:class:`~sensors.errors.EdgeAgentError`; :func:`check` reports all of them at once.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.config import AgentConfig
from agent.tasks import task_types
from sensors.errors import ConfigError, EdgeAgentError, StateError
from sensors.settings import Secret, Tls
from sensors.sources import SOURCES

__all__ = ["check", "did_you_mean", "known_keys", "problems", "warnings"]

#: where systemd puts a service's credentials (LoadCredential=)
CREDENTIALS = Path("/run/credentials")


def check(config: AgentConfig) -> None:
    """Raise the one problem found (keeping its class and exit code), or a ConfigError listing several."""
    found = problems(config)
    if len(found) == 1:
        raise found[0]
    if found:
        raise ConfigError(f"{len(found)} problems: " + "; ".join(str(problem) for problem in found))


def problems(config: AgentConfig) -> list[EdgeAgentError]:
    """Everything that would stop ``run`` from starting with this configuration."""
    found: list[EdgeAgentError] = []
    types = task_types()
    for name, task in config.task_configs().items():
        _attempt(found, types[name].check, task)
    for source in config.sources:
        _attempt(found, SOURCES.get(source.kind).check, source)
    for where, setting in _settings(config, ""):
        _attempt(found, _check_file_setting, where, setting)
    _attempt(found, writable_dir, config.state_dir, "state_dir")
    return found


def warnings(config: AgentConfig) -> list[str]:
    """Settings that are allowed but probably a mistake, each prefixed with its task (:meth:`Task.warnings`) or
    its section."""
    types = task_types()
    found = [f"{name}: {text}" for name, task in config.task_configs().items() for text in types[name].warnings(task)]
    if config.cluster.publish_state and not any(getattr(sink, "kind", None) == "mqtt" for sink in config.sinks):
        found.append("cluster: publish_state without an mqtt sink: a standby learns that this agent is down from "
                     "its status topic and last will, which only an mqtt sink publishes")
    return found


def _attempt(found: list[EdgeAgentError], action: Callable[..., object], *args: Any) -> None:
    try:
        action(*args)
    except EdgeAgentError as error:
        found.append(error)


def _settings(value: Any, where: str) -> Iterator[tuple[str, Secret | Tls]]:
    """Every secret and TLS setting in the configuration, with its key path."""
    if isinstance(value, (Secret, Tls)):
        yield where, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _settings(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _settings(item, f"{where}[{index}]")


def _check_file_setting(where: str, setting: Secret | Tls) -> None:
    if isinstance(setting, Secret):
        if setting.file is None or not _outside_its_unit(setting.file):
            try:
                setting.read()
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
        return
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(setting, name)
        if path is None or _outside_its_unit(path):
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as error:
            raise ConfigError(f"{where}.{name}: cannot read {path}: {error.strerror}") from None


def _outside_its_unit(path: Path) -> bool:
    """A systemd credential exists only inside its service: outside it (``validate-config`` from a shell,
    where ``$CREDENTIALS_DIRECTORY`` is unset) it cannot be checked, and is not an error."""
    return path.is_relative_to(CREDENTIALS) and not os.environ.get("CREDENTIALS_DIRECTORY")


def writable_dir(path: Path, key: str) -> None:
    """StateError unless ``path`` is (or can be made as) a folder this process can write, files in it included."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StateError(f"{key}: {existing} is not a folder; point {key} at a folder")
    if existing != path:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StateError(f"{key}: cannot create {path}: {existing} is not writable by this user; "
                             f"create it for the agent's user or choose another {key}")
        return
    try:  # a real write: permission bits do not tell about read-only mounts
        with tempfile.TemporaryFile(dir=path, prefix=".preflight-"):
            pass
    except OSError as error:
        raise StateError(f"{key}: cannot write in {path}: {error.strerror}; give the agent's user write "
                         f"access or choose another {key}") from None
    for child in path.iterdir():
        if child.is_file() and not os.access(child, os.W_OK):
            raise StateError(f"{key}: {child} is not writable by this user; fix its owner or mode")


def known_keys(model: type[BaseModel]) -> set[str]:
    """Every key any model reachable from ``model`` accepts (for "did you mean" suggestions)."""
    keys: set[str] = set()
    pending: list[Any] = [model]
    seen: set[Any] = set()
    while pending:
        annotation = pending.pop()
        if annotation in seen:
            continue
        seen.add(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                keys.add(name)
                pending.append(info.annotation)
        else:
            pending.extend(typing.get_args(annotation))
    return keys


def did_you_mean(key: str, known: set[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known key, or nothing."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

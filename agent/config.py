"""Agent configuration: strict YAML validation, tagged unions of sources and sinks, secrets.

Every model forbids unknown keys; :func:`load_config` turns validation errors into
one :class:`ConfigError` whose lines name the YAML key path and what was expected.
Secrets come from a file or an environment variable and are held as ``SecretStr``
so that they never appear in logs or reprs.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

import models
from agent.metrics import MetricsConfig
from agent.quarantine import QuarantineConfig
from agent.simulator import SimulatorSource
from agent.sinks import SINKS
from agent.standby import ClusterConfig
from agent.stats import DEFAULT_MAX_SENSORS, STATUS_TOP_SENSORS
from agent.tasks import TASKS
from models.runtime import DEFAULT_STATE_DIR, BackendConfig, OnnxRuntimeConfig
from sensors.errors import ConfigError
from sensors.settings import MqttConnection, Secret, Strict, Tls
from sensors.sources import SOURCES
from sensors.wire import DEFAULT_MAX_PAYLOAD

__all__ = ["AgentConfig", "ConfigError", "MqttConnection", "Secret", "Strict", "Tls", "load_config"]

# the demo's simulator is the one source that lives in the agent: it gathers every task's simulated sensors
SOURCES.register("simulator", SimulatorSource)


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console lines on a terminal, JSON otherwise (journald)")


@cache
def tasks_model() -> type[BaseModel]:
    """A model with one optional field per registered task, each validated by its own config type."""
    fields: Any = {name: (cls.config_type | None, None) for name, cls in TASKS.all().items()}
    return create_model("TasksConfig", __config__=ConfigDict(extra="forbid"), **fields)


class AgentConfig(Strict):
    """The whole agent configuration (one YAML file); ``tasks`` is typed per registered task."""

    device: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="this agent's id, used in topics")
    state_dir: Path = Field(default=DEFAULT_STATE_DIR, description="learned state, outbox, caches")
    log: LogConfig = Field(default_factory=LogConfig)
    sources: list[Any] = Field(min_length=1, description="where sensor data comes from")
    sinks: list[Any] = Field(min_length=1, description="where events go")
    backend: BackendConfig = Field(default_factory=OnnxRuntimeConfig, description="inference backend")
    tasks: Any = Field(description="task name -> task settings")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD, ge=1024, description="largest sensor message")
    sensor_timeout_s: float = Field(default=10, gt=0, description="silence after which a sensor is offline")
    max_sensors: int = Field(default=DEFAULT_MAX_SENSORS, ge=1, le=1_000_000, description="sensors the agent "
                             "keeps state for; beyond it the least recently seen is forgotten (counted)")
    status_top_sensors: int = Field(default=STATUS_TOP_SENSORS, ge=0, le=10_000, description="sensors named in "
                                    "the status message (the most active); all are in its totals")
    quarantine: QuarantineConfig = Field(default_factory=QuarantineConfig,
                                         description="when a sensor whose input makes tasks fail is ignored")
    stats_interval_s: float = Field(default=30, gt=0, description="stats to the log and status topic")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Prometheus endpoint (off by default)")
    max_rss_mb: float | None = Field(default=None, gt=0, description="exit for a restart above this RSS")
    drain_timeout_s: float = Field(default=10, gt=0, description="deadline to finish queued work at stop")
    stuck_after_s: float = Field(default=30, gt=0, description="a worker inside one call this long is hung: "
                                 "watchdog pings stop and systemd restarts the agent")
    plugins: list[str] = Field(default=[], description="Python modules to import first; they may register "
                               "extra tasks with agent.tasks.register_task")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="learned state for a standby, "
                                   "and the agents this one stands in for (docs/scaling.md)")

    @model_validator(mode="after")
    def _cluster_needs_mqtt(self) -> AgentConfig:
        if self.cluster.active and not any(getattr(source, "kind", None) == "mqtt" for source in self.sources):
            raise ValueError("cluster: publish_state and standby_for need an mqtt source (its broker and prefix)")
        return self

    def task_configs(self) -> dict[str, Any]:
        """The enabled tasks' validated configs by task name."""
        return {name: value for name, value in self.tasks if value is not None and value.enabled}


@cache
def agent_model() -> type[AgentConfig]:
    """AgentConfig with ``tasks``, ``sources`` and ``sinks`` typed by their registries (built when first needed)."""
    model: type[AgentConfig] = create_model(
        "AgentConfig", __base__=AgentConfig,
        tasks=(tasks_model(), Field(description="task name -> task settings")),
        sources=(list[SOURCES.config_union()],  # type: ignore[misc,arg-type]
                 Field(min_length=1, description="where sensor data comes from")),
        sinks=(list[SINKS.config_union()],  # type: ignore[misc,arg-type]
               Field(min_length=1, description="where events go")),
    )
    return model


def _forget_derived_models() -> None:
    tasks_model.cache_clear()
    agent_model.cache_clear()


for _registry in (TASKS, SOURCES, SINKS):
    _registry.on_change(_forget_derived_models)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Read and validate a YAML config file; raises ConfigError naming each bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data.update(overrides or {})
    config = parse_config(data, source=str(path))
    return resolve_paths(config, path.parent)


def resolve_paths(config: AgentConfig, base: Path) -> AgentConfig:
    """Relative model (and other shipped) paths are relative to the config file's folder or, failing that, to the
    folder that holds the installed ``models`` package (so ``models/vibration`` names the shipped model both in a
    checkout and after ``pip install``); relative output files are relative to the state dir."""
    shipped = Path(models.__file__).resolve().parent.parent
    for _, task in config.tasks:
        for field, path in (task.shipped_paths() if task is not None else {}).items():
            if not path.is_absolute():
                near = (base / path).resolve()
                setattr(task, field, near if near.exists() or not (shipped / path).exists() else shipped / path)
    for sink in config.sinks:
        if sink.kind == "jsonl" and not sink.path.is_absolute():
            sink.path = config.state_dir / sink.path
        if sink.kind == "jsonl" and sink.attachments is not None and not sink.attachments.is_absolute():
            sink.attachments = config.state_dir / sink.attachments
    return config


def parse_config(data: dict[str, Any], source: str = "<config>") -> AgentConfig:
    for module in data.get("plugins") or []:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"{source}: plugins: cannot import {module!r}: {error}") from None
    try:
        return agent_model().model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(error, source)) from None


def format_errors(error: ValidationError, source: str) -> str:
    from agent.preflight import did_you_mean, known_keys

    lines = [f"{source}: {error.error_count()} error(s)"]
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"] if not _is_union_tag(part))
        got = "" if item["type"] == "missing" else f" (got {item['input']!r:.60})"
        if item["type"] == "extra_forbidden":
            got = did_you_mean(str(item["loc"][-1]), known_keys(agent_model()))
        lines.append(f"  {path or '<top>'}: {item['msg']}{got}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the discriminator value ("mqtt") and the "function-after[...]" wrappers in loc
    return isinstance(part, str) and (part.startswith("function-") or part in _union_tags())


def _union_tags() -> set[str]:
    from models.runtime.registry import BACKENDS

    return {*SOURCES.kinds(), *SINKS.kinds(), *BACKENDS.kinds()}

"""Agent configuration: strict YAML validation, tagged unions of sources and sinks, secrets.

Every model forbids unknown keys; :func:`load_config` turns validation errors into
one :class:`ConfigError` whose lines name the YAML key path and what was expected.
Secrets come from a file or an environment variable and are held as ``SecretStr``
so that they never appear in logs or reprs.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model, model_validator

import models
from agent.tasks import task_types
from models.runtime import BackendConfig, OnnxRuntimeConfig
from sensors.topics import DEFAULT_PREFIX
from sensors.wire import DEFAULT_MAX_PAYLOAD


class ConfigError(ValueError):
    """A configuration that fails validation; each line names a key path and what was expected."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Secret(Strict):
    """A secret read from a file (preferred; e.g. a systemd credential) or an environment variable."""

    file: Path | None = Field(default=None, description="file holding the secret (trailing newline stripped)")
    env: str | None = Field(default=None, description="environment variable holding the secret")

    @model_validator(mode="after")
    def one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")
        return self

    def read(self) -> SecretStr:
        """Read the secret now (not at import or validation time)."""
        if self.file is not None:
            return SecretStr(self.file.read_text().rstrip("\n"))
        value = os.environ.get(self.env or "")
        if value is None:
            raise ConfigError(f"environment variable {self.env} for a secret is not set")
        return SecretStr(value)


class Tls(Strict):
    """MQTT over TLS with server verification and, optionally, a client certificate (mTLS)."""

    ca_file: Path = Field(description="CA certificate that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="client certificate for mTLS")
    key_file: Path | None = Field(default=None, description="client private key for mTLS")


class MqttConnection(Strict):
    """How to reach an MQTT broker."""

    host: str = Field(default="localhost", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (8883 for TLS)")
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="first topic level of every topic")
    username: str | None = Field(default=None, description="MQTT user name")
    password: Secret | None = Field(default=None, description="MQTT password, from a file or env")
    tls: Tls | None = Field(default=None, description="TLS settings; when set, plaintext is refused")
    keepalive_s: int = Field(default=10, ge=2, le=3600, description="MQTT keepalive; a dead broker is "
                             "detected within 1.5x this")


class MqttSourceConfig(MqttConnection):
    """Sensor input from MQTT (QoS 1 subscription)."""

    kind: Literal["mqtt"]
    share_group: str | None = Field(default=None, description="MQTT 5 shared subscription group, to split "
                                    "sensor streams between several agents")
    client_id: str | None = Field(default=None, description="defaults to '<device>-in'")


class Curve(Strict):
    """ZeroMQ CURVE encryption: this side's key pair and the client keys allowed in."""

    secret_key: Secret = Field(description="this socket's Z85 secret key")
    public_key: str = Field(description="this socket's Z85 public key")
    allowed_clients: list[str] = Field(default=[], description="Z85 public keys of allowed peers")


class ZmqSourceConfig(Strict):
    """Sensor input from a ZeroMQ SUB or PULL socket."""

    kind: Literal["zmq"]
    endpoint: str = Field(description="e.g. tcp://0.0.0.0:5556 or ipc:///run/edge-agent/in")
    socket: Literal["sub", "pull"] = Field(default="pull", description="socket type")
    bind: bool = Field(default=True, description="bind (sensors connect) or connect (to a publisher)")
    receive_hwm: int = Field(default=1000, ge=1, description="receive high-water mark (messages)")
    heartbeat_s: float = Field(default=5.0, gt=0, description="ZMTP heartbeat interval")
    curve: Curve | None = Field(default=None, description="CURVE server settings")


class RecordingSourceConfig(Strict):
    """Sensor input from an MCAP recording (``edge-agent record``)."""

    kind: Literal["recording"]
    path: Path = Field(description="recording file")
    speed: float | None = Field(default=None, gt=0, description="1 = original timing; null = as fast as possible")


class SimulatorSourceConfig(Strict):
    """Simulated factory streams, in process (the demo)."""

    kind: Literal["simulator"]
    machines: int = Field(default=3, ge=0, le=100, description="simulated vibration sensors")
    faulty: int = Field(default=1, ge=0, description="how many of them develop a bearing fault")
    sample_rate: float = Field(default=20_000, gt=0, description="vibration sample rate, Hz")
    fault_onset_s: float = Field(default=60, ge=0, description="seconds after start when faults begin")
    failure_s: float = Field(default=150, gt=0, description="seconds after start when faulty machines fail")
    cameras: int = Field(default=1, ge=0, le=16, description="simulated camera stations")
    parts_per_s: float = Field(default=2.0, gt=0, description="parts per second per camera")
    defect_rate: float = Field(default=0.2, ge=0, le=1, description="share of defective parts (demo: high)")
    seed: int = Field(default=7, description="random seed")


SourceConfig = Annotated[
    Union[MqttSourceConfig, ZmqSourceConfig, RecordingSourceConfig, SimulatorSourceConfig],
    Field(discriminator="kind"),
]


class OutboxConfig(Strict):
    """The durable outbox between the pipeline and the MQTT broker."""

    max_events: int = Field(default=100_000, ge=10, description="events held at most")
    max_mb: float = Field(default=256, gt=0, description="payload megabytes held at most")
    ttl_s: dict[str, float] = Field(
        default={"health": 3600, "status": 600, "image": 86_400},
        description="time-to-live per event type ('image' for attachments); alarms never expire",
    )


class MqttSinkConfig(MqttConnection):
    """Events upstream over MQTT 5, QoS 1, through the durable outbox."""

    kind: Literal["mqtt"]
    client_id: str | None = Field(default=None, description="defaults to '<device>-out'")
    session_expiry_s: int = Field(default=3600, ge=0, description="MQTT 5 session expiry")
    max_inflight: int = Field(default=100, ge=1, le=65535, description="unacknowledged QoS 1 messages")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)


class ZmqSinkConfig(Strict):
    """Events on a ZeroMQ PUB socket as two frames: [topic, JSON]."""

    kind: Literal["zmq"]
    endpoint: str = Field(description="e.g. tcp://0.0.0.0:5557")
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="first topic level of every topic frame")
    send_hwm: int = Field(default=10_000, ge=1, description="send high-water mark")


class JsonlSinkConfig(Strict):
    """Events appended to a JSON Lines file."""

    kind: Literal["jsonl"]
    path: Path = Field(description="file to append to")


class ConsoleSinkConfig(Strict):
    """Events printed readably on standard output (the demo)."""

    kind: Literal["console"]
    min_severity: Literal["info", "warning", "alarm"] = Field(default="warning",
                                                               description="print events at or above this")


SinkConfig = Annotated[
    Union[MqttSinkConfig, ZmqSinkConfig, JsonlSinkConfig, ConsoleSinkConfig], Field(discriminator="kind")
]


class LogConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console lines on a terminal, JSON otherwise (journald)")


@cache
def tasks_model() -> type[BaseModel]:
    """A model with one optional field per registered task, each validated by its own config type."""
    fields: Any = {name: (cls.config_type | None, None) for name, cls in task_types().items()}
    return create_model("TasksConfig", __config__=ConfigDict(extra="forbid"), **fields)


class AgentConfig(Strict):
    """The whole agent configuration (one YAML file); ``tasks`` is typed per registered task."""

    device: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="this agent's id, used in topics")
    state_dir: Path = Field(default=Path("/var/lib/edge-agent"), description="learned state, outbox, caches")
    log: LogConfig = Field(default_factory=LogConfig)
    sources: list[SourceConfig] = Field(min_length=1, description="where sensor data comes from")
    sinks: list[SinkConfig] = Field(min_length=1, description="where events go")
    backend: BackendConfig = Field(default_factory=OnnxRuntimeConfig, description="inference backend")
    tasks: Any = Field(description="task name -> task settings")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD, ge=1024, description="largest sensor message")
    sensor_timeout_s: float = Field(default=10, gt=0, description="silence after which a sensor is offline")
    stats_interval_s: float = Field(default=30, gt=0, description="stats to the log and status topic")
    max_rss_mb: float | None = Field(default=None, gt=0, description="exit for a restart above this RSS")
    drain_timeout_s: float = Field(default=10, gt=0, description="deadline to finish queued work at stop")
    stuck_after_s: float = Field(default=30, gt=0, description="a worker inside one call this long is hung: "
                                 "watchdog pings stop and systemd restarts the agent")
    plugins: list[str] = Field(default=[], description="Python modules to import first; they may register "
                               "extra tasks with agent.tasks.register_task")

    def task_configs(self) -> dict[str, Any]:
        """The enabled tasks' validated configs by task name."""
        return {name: value for name, value in self.tasks if value is not None and value.enabled}


@cache
def agent_model() -> type[AgentConfig]:
    """AgentConfig with ``tasks`` typed by the task registry (built when first needed)."""
    model: type[AgentConfig] = create_model(
        "AgentConfig", __base__=AgentConfig,
        tasks=(tasks_model(), Field(description="task name -> task settings")),
    )
    return model


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
    """Relative model paths are relative to the config file's folder or, failing that, to the folder that
    holds the installed ``models`` package (so ``models/vibration`` names the shipped model both in a
    checkout and after ``pip install``); relative output files are relative to the state dir."""
    shipped = Path(models.__file__).resolve().parent.parent
    for _, task in config.tasks:
        if task is not None and task.model is not None and not task.model.is_absolute():
            near = (base / task.model).resolve()
            task.model = near if near.exists() or not (shipped / task.model).exists() else shipped / task.model
    for sink in config.sinks:
        if isinstance(sink, JsonlSinkConfig) and not sink.path.is_absolute():
            sink.path = config.state_dir / sink.path
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
    lines = [f"{source}: {error.error_count()} error(s)"]
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"] if not _is_union_tag(part))
        got = "" if item["type"] == "missing" else f" (got {item['input']!r:.60})"
        lines.append(f"  {path or '<top>'}: {item['msg']}{got}")
    return "\n".join(lines)


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the discriminator value ("mqtt") and the "function-after[...]" wrappers in loc
    return isinstance(part, str) and (part.startswith("function-") or part in _TAGS)


_TAGS = {"mqtt", "zmq", "recording", "simulator", "jsonl", "console", "onnxruntime", "tensorrt"}

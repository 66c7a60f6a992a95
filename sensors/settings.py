"""Configuration building blocks shared by every layer: strict models, secrets, MQTT connections.

Each source, sink and backend keeps its own config model next to its code; these are the
pieces they share.  Secrets come from a file or an environment variable, read when needed
(never at import or validation time) and held as ``SecretStr`` so that they never reach a log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from sensors.errors import ConfigError
from sensors.topics import DEFAULT_PREFIX


class Strict(BaseModel):
    """A config model that rejects unknown keys."""

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
        """Read the secret now (not at import or validation time); ConfigError says why it cannot be."""
        if self.file is not None:
            try:
                return SecretStr(self.file.read_text().rstrip("\n"))
            except OSError as error:
                raise ConfigError(f"cannot read the secret file {self.file}: {error.strerror}") from None
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
    brokers: list[str] | None = Field(default=None, min_length=1, description="brokers to fail over between, "
                                      "each 'host:port' ('[v6 address]:port'); replaces host and port, which "
                                      "must then be left out")
    failover_attempts: int = Field(default=2, ge=1, le=100, description="failed connection attempts to the "
                                   "current broker before moving to the next one in 'brokers'")

    @model_validator(mode="after")
    def brokers_or_host(self) -> MqttConnection:
        if self.brokers is not None:
            both = sorted({"host", "port"} & self.model_fields_set)
            if both:
                raise ValueError(f"give either 'brokers' or {' and '.join(repr(name) for name in both)}, not both")
            endpoints = [parse_broker(entry) for entry in self.brokers]
            if len(set(endpoints)) < len(endpoints):
                raise ValueError(f"'brokers' lists a broker twice: {self.brokers}")
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """The brokers to connect to, in order: ``brokers`` if given, else the one ``host``:``port``."""
        if self.brokers is None:
            return [(self.host, self.port)]
        return [parse_broker(entry) for entry in self.brokers]


def parse_broker(entry: str) -> tuple[str, int]:
    """``host:port`` (or ``[IPv6 address]:port``) as a host and a port; ValueError says what is wrong."""
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>[0-9]{1,5})", entry)
    if match is None:
        raise ValueError(f"broker {entry!r} is not 'host:port' (e.g. '10.0.0.5:1883', 'broker-b.plant:8883' or "
                         "'[fd00::5]:1883')")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"broker {entry!r}: port {port} is not between 1 and 65535")
    return match["v6"] or match["host"], port

"""Events appended to a JSON Lines file, one per line."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.sinks import Outgoing, Sink, SinkEnv
from sensors.settings import Strict


class JsonlSinkConfig(Strict):
    """Events appended to a JSON Lines file."""

    kind: Literal["jsonl"]
    path: Path = Field(description="file to append to; relative paths are relative to state_dir")


class JsonlSink(Sink):
    """Appends one JSON event per line (attachments are not written)."""

    name = "jsonl"
    config_type = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig, env: SinkEnv | None = None) -> None:
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = config.path.open("ab")
        self._lock = threading.Lock()

    def send(self, item: Outgoing) -> None:
        with self._lock:
            self.handle.write(item.payload + b"\n")
            self.handle.flush()

    def close(self) -> None:
        self.handle.close()

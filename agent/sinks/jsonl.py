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
    attachments: Path | None = Field(
        default=None, description="folder for attachments (reject crops, page overlays) as <event_id>.jpg, for "
        "`edge-agent report`; relative paths are relative to state_dir; none written when unset")


class JsonlSink(Sink):
    """Appends one JSON event per line; attachments go to files when ``attachments`` is set."""

    name = "jsonl"
    config_type = JsonlSinkConfig

    def __init__(self, config: JsonlSinkConfig, env: SinkEnv | None = None) -> None:
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = config.path.open("ab")
        self.attachments = config.attachments
        if self.attachments is not None:
            self.attachments.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def send(self, item: Outgoing) -> None:
        with self._lock:
            self.handle.write(item.payload + b"\n")
            self.handle.flush()
        if self.attachments is not None and item.attachment is not None:
            (self.attachments / f"{item.event['event_id']}.jpg").write_bytes(item.attachment)

    def close(self) -> None:
        self.handle.close()

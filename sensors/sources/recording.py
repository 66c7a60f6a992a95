"""Sensor input from an MCAP recording, with its original timing, faster, or as fast as possible."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from sensors.errors import RecordingError
from sensors.settings import Strict
from sensors.sources import Deliver, Source, SourceEnv

log = structlog.get_logger(__name__)


class RecordingSourceConfig(Strict):
    """Sensor input from an MCAP recording (``edge-agent record``)."""

    kind: Literal["recording"]
    path: Path = Field(description="recording file")
    speed: float | None = Field(default=None, gt=0, description="1 = original timing; null = as fast as possible")


class RecordingSource(Source):
    """Reads an MCAP recording, with its original timing, faster, or as fast as possible."""

    name = "recording"
    config_type = RecordingSourceConfig

    def __init__(self, config: RecordingSourceConfig, env: SourceEnv | None = None) -> None:
        self.config = config
        self.can_wait = config.speed is None
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.messages = 0

    @classmethod
    def check(cls, config: RecordingSourceConfig) -> None:
        """The recording exists and is MCAP (RecordingError otherwise)."""
        from sensors.recording import RecordingReader

        with RecordingReader(config.path):
            pass

    def start(self, deliver: Deliver) -> None:
        from sensors.recording import RecordingReader
        from sensors.replay import replay

        def run() -> None:
            try:
                with RecordingReader(self.config.path) as reader:
                    if not reader.complete:
                        log.warning("recording was not closed properly; reading what is intact",
                                    path=str(self.config.path), damage=reader.damage)
                    self.messages = replay(reader, lambda topic, data: deliver(data), self.config.speed,
                                           self.stop)
            except RecordingError as error:
                self.error = str(error)
                log.error("recording source stopped early", path=str(self.config.path), error=self.error)
            except Exception as error:
                self.error = f"{self.config.path}: the recording source failed: {error!r}"
                log.exception("recording source failed", path=str(self.config.path))
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=run, name="recording-source", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)

    def stats(self) -> dict[str, Any]:
        return {"messages": self.messages, "finished": self.finished.is_set()}

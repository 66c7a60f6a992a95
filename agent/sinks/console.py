"""Events printed readably on standard output, one line each (the demo)."""

from __future__ import annotations

import sys
import threading
from typing import Literal, TextIO

from pydantic import Field

from agent.events import SEVERITY_RANK
from agent.sinks import Outgoing, Sink, SinkEnv, render_event
from sensors.settings import Strict


class ConsoleSinkConfig(Strict):
    """Events printed readably on standard output (the demo)."""

    kind: Literal["console"]
    min_severity: Literal["info", "warning", "alarm"] = Field(default="warning",
                                                               description="print events at or above this")
    show: dict[str, list[str]] = Field(
        default_factory=dict, description="event type -> body fields: events of these types are printed whatever "
        "their severity, with only those fields (the demo prints each speaker_turn this way)")


class ConsoleSink(Sink):
    """Prints events readably, one line each, for the demo and for operators."""

    name = "console"
    config_type = ConsoleSinkConfig

    def __init__(self, config: ConsoleSinkConfig, env: SinkEnv | None = None, stream: TextIO | None = None) -> None:
        self.min_rank = SEVERITY_RANK[config.min_severity]
        self.show = config.show
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, item: Outgoing) -> None:
        fields = self.show.get(item.event["type"])
        if fields is not None:
            body = item.event.get("body", {})
            line = render_event({**item.event, "score": None, "body": {key: body.get(key) for key in fields}})
        elif item.severity >= self.min_rank:
            line = render_event(item.event)
        else:
            return
        with self._lock:
            print(line, file=self.stream, flush=True)

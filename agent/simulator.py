"""The demo's simulated factory: every task's simulated sensors, paced in real time, as one source.

Each task plug-in may declare a :class:`~agent.tasks.base.Simulation` (the vibration task: pumps
that develop bearing faults; the quality task: camera stations).  The simulator source's config
has one optional section per such task, and each stream yields encoded wire messages, so the
demo exercises the same decode path as live sensors.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from agent.tasks import TASKS
from sensors.settings import Strict
from sensors.sources import Deliver, Source, SourceEnv
from sensors.wire import SensorMessage, encode


class SimulatorBase(Strict):
    """Simulated factory streams, in process (the demo); one section per task that can simulate sensors."""

    kind: Literal["simulator"]
    seed: int = Field(default=7, description="random seed")


@cache
def simulator_config() -> type[SimulatorBase]:
    """The simulator's config model: SimulatorBase plus one optional section per task with a simulation."""
    fields: Any = {name: (cls.simulation | None, Field(default=None, description=f"simulated {name} sensors"))
                   for name, cls in TASKS.all().items() if cls.simulation is not None}
    model: type[SimulatorBase] = create_model("SimulatorSourceConfig", __base__=SimulatorBase, **fields)
    return model


TASKS.on_change(simulator_config.cache_clear)


def factory_messages(config: BaseModel, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
    """One timestamped message stream per simulated sensor (unpaced), times from ``start_ns``."""
    seed = getattr(config, "seed")  # noqa: B009 - declared on SimulatorBase
    streams = []
    for name in TASKS.kinds():
        simulation = getattr(config, name, None)
        if simulation is not None:
            streams.extend(simulation.streams(seed, start_ns))
    return streams


def factory_streams(config: BaseModel, stop: threading.Event) -> list[tuple[str, Iterator[bytes]]]:
    """One paced stream of wire bytes per simulated sensor."""
    return [(sensor, paced(messages, stop)) for sensor, messages in factory_messages(config, time.time_ns())]


def merged(config: BaseModel, start_ns: int) -> Iterator[SensorMessage]:
    """Every simulated sensor's messages in one stream, in timestamp order (for one publisher or a recording)."""
    streams = [messages for _, messages in factory_messages(config, start_ns)]
    return heapq.merge(*streams, key=lambda message: message.timestamp_ns)


def paced(messages: Iterable[SensorMessage], stop: threading.Event) -> Iterator[bytes]:
    """Encode messages and release each at its timestamp (generation runs ahead, never behind)."""
    for message in messages:
        delay = (message.timestamp_ns - time.time_ns()) / 1e9
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        yield encode(message)


class SimulatorSource(Source):
    """Simulated factory streams generated in process, one thread per sensor."""

    name = "simulator"

    @classmethod
    def config_model(cls) -> type[BaseModel]:
        return simulator_config()

    def __init__(self, config: BaseModel, env: SourceEnv | None = None) -> None:
        self.config = config
        self.finished = threading.Event()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, deliver: Deliver) -> None:
        for name, stream in factory_streams(self.config, self.stop):
            thread = threading.Thread(target=self._pump, args=(stream, deliver), name=f"sim-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _pump(self, stream: Iterator[bytes], deliver: Deliver) -> None:
        for raw in stream:
            if self.stop.is_set():
                return
            deliver(raw)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(2)

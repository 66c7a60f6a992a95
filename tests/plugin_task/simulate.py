"""The level task's demo sensor: a microphone that is quiet, with a loud second every few seconds."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from agent.tasks.base import Simulation
from sensors.wire import Kind, SensorMessage

RATE = 8000.0


class MicrophoneSimulation(Simulation):
    """Microphones ``mic-00`` ...: noise at -50 dBFS, one second at -10 dBFS every ``loud_every_s``."""

    microphones: int = Field(default=1, ge=0, le=8, description="simulated microphones")
    loud_every_s: int = Field(default=3, ge=2, description="a loud second every this many seconds")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        return [(f"mic-{index:02d}", self._stream(f"mic-{index:02d}", seed + index, start_ns))
                for index in range(self.microphones)]

    def _stream(self, sensor: str, seed: int, start_ns: int) -> Iterator[SensorMessage]:
        rng = np.random.default_rng(seed)
        second = 0
        while True:
            level = 10 ** (-10 / 20) if second % self.loud_every_s == self.loud_every_s - 1 else 10 ** (-50 / 20)
            samples = (rng.standard_normal(int(RATE)) * level).astype(np.float32)[:, None]
            yield SensorMessage(sensor, Kind.AUDIO, second, start_ns + second * 1_000_000_000, samples, RATE)
            second += 1

"""The demo's microphone: a conversation of three synthetic speakers in a small room, on a loop.

The conversation is a shipped asset (``sensors/simulate/data/conversation.npz``, made from espeak-ng
voices by ``python -m sensors.simulate.conversation``), so the demo needs no synthesiser; a little
noise is added live, and a quiet pause separates the loops.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from agent.tasks.base import Simulation
from sensors.simulate.conversation import load_demo
from sensors.simulate.speech import SAMPLE_RATE
from sensors.wire import Kind, SensorMessage

CHUNK_S = 0.1


class MicrophoneSimulation(Simulation):
    """Microphones ``mic-00`` ...: each plays the three-speaker conversation on a loop (int16 PCM, 16 kHz)."""

    microphones: int = Field(default=1, ge=0, le=16, description="simulated microphones")
    pause_s: float = Field(default=3.0, ge=0, le=600, description="quiet between two plays of the conversation")
    noise_dbfs: float = Field(default=-60.0, ge=-120, le=-20, description="level of the room noise added, dBFS")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        return [(f"mic-{index:02d}", self._stream(f"mic-{index:02d}", seed + index, start_ns))
                for index in range(self.microphones)]

    def _stream(self, sensor: str, seed: int, start_ns: int) -> Iterator[SensorMessage]:
        rng = np.random.default_rng(seed)
        conversation, _ = load_demo()
        loop = np.concatenate((conversation, np.zeros(int(self.pause_s * SAMPLE_RATE), np.float32)))
        chunk = int(CHUNK_S * SAMPLE_RATE)
        noise = 10 ** (self.noise_dbfs / 20)
        seq = position = 0
        while True:
            samples = np.take(loop, np.arange(position, position + chunk), mode="wrap")
            samples = samples + rng.standard_normal(chunk).astype(np.float32) * noise
            pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)[:, None]
            yield SensorMessage(sensor, Kind.AUDIO, seq, start_ns + round(position * 1e9 / SAMPLE_RATE), pcm,
                                float(SAMPLE_RATE))
            seq += 1
            position += chunk

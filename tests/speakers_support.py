"""Helpers of the speakers tests: a stand-in embedding model (a real ONNX graph), synthetic speech from
espeak-ng (cached per voice and text), and wire-like windows of a microphone stream."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agent.tasks.base import TaskContext
from agent.tasks.speakers.config import SpeakersConfig
from agent.tasks.speakers.task import SpeakersTask
from agent.windowing import Window
from models.runtime import load_model
from models.speakers.standin import write_standin
from sensors.simulate.speech import Voice, synthesise
from sensors.wire import Kind

RATE = 16_000
ORIGIN_NS = 1_700_000_000 * 10**9
#: two voices the stand-in model tells apart: a low male and a high female espeak-ng variant
LOW = Voice("espeak-ng", "en-us", "m3", 20, 150)
HIGH = Voice("espeak-ng", "en-gb", "f2", 90, 170)
TEXTS = ("The pump on line three is running hot again today.",
         "Could you check the pressure gauge before lunch, please?",
         "I think the bearing needs replacing next week.",
         "Let us write it down in the maintenance log tonight.")


@functools.cache
def speech(voice: Voice, text: str) -> np.ndarray:
    """Synthesised speech, 16 kHz float32, leading/trailing silence trimmed."""
    from sensors.simulate.conversation import trim

    return trim(synthesise(voice, text))


def dialogue(voices: list[Voice], pause_s: float = 1.0) -> tuple[np.ndarray, list[tuple[float, float, Voice]]]:
    """The voices speak one text each in turn, with pauses; returns the audio and who spoke when (s)."""
    parts, truth, cursor = [np.zeros(int(0.5 * RATE), np.float32)], [], 0.5
    for index, voice in enumerate(voices):
        clip = speech(voice, TEXTS[index % len(TEXTS)])
        parts += [clip, np.zeros(int(pause_s * RATE), np.float32)]
        truth.append((cursor, cursor + len(clip) / RATE, voice))
        cursor += len(clip) / RATE + pause_s
    parts.append(np.zeros(RATE, np.float32))
    return np.concatenate(parts), truth


def windows(audio: np.ndarray, sensor: str = "mic-01", rate: float = RATE, window_s: float = 0.5,
            start_ns: int = ORIGIN_NS, int16: bool = True) -> list[Window]:
    """The audio cut as the agent's windower cuts it (2-D float32), int16 PCM values by default."""
    samples = np.asarray(audio, np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples
    if int16:
        samples = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.float32)
    size = round(window_s * rate)
    return [Window(sensor, Kind.AUDIO, samples[i : i + size], rate, start_ns + round(i * 1e9 / rate), i // size)
            for i in range(0, len(samples) - size + 1, size)]


def standin(folder: Path, **thresholds: float) -> Path:
    """The stand-in model's manifest in ``folder`` (thresholds overridable)."""
    from models.speakers.standin import THRESHOLDS

    return write_standin(folder, {**THRESHOLDS, **thresholds})


def make_task(tmp_path: Path, **config: Any) -> SpeakersTask:
    model = tmp_path / "standin" / "manifest.yaml"
    if not model.exists():
        standin(model.parent)
    settings = {"model": model, **config}
    context = TaskContext("edge-1", tmp_path / "state" / "speakers", load_model, structlog.get_logger())
    return SpeakersTask(SpeakersConfig(**settings), context)


def run(task: SpeakersTask, items: list[Window]) -> list[Any]:
    """Every event draft the windows produce."""
    return [draft for window in items for draft in task.process(window)]


def turns(drafts: list[Any]) -> list[dict[str, Any]]:
    return [draft.body for draft in drafts if draft.type == "speaker_turn"]

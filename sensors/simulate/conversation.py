"""Synthetic conversations: synthetic speakers taking turns, with pauses, interruptions, overlaps, room
reverberation, noise and level changes, and the truth of who spoke when.

Used by the speakers task's demo microphone (a shipped asset, so the demo needs no synthesiser:
``python -m sensors.simulate.conversation`` rebuilds it with a fixed seed) and by the diarization
evaluation (``models.speakers.diarization``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from sensors.simulate.speech import SAMPLE_RATE, Voice, synthesise

#: the demo's conversation, shipped (16 kHz int16, compressed): built by main() below
DEMO_CONVERSATION = Path(__file__).resolve().parent / "data" / "conversation.npz"
DEMO_SEED = 11
DEMO_VOICES = (Voice("espeak-ng", "en-us", "m3", 35, 150), Voice("espeak-ng", "en-gb", "f2", 80, 165),
               Voice("espeak-ng", "en-gb-scotland", "m7", 55, 140))
DEMO_LINES = (
    (0, "Morning. The pump on line three was running hot again during the night shift."),
    (1, "I saw that. The vibration alarm came on just after two in the morning."),
    (2, "Did anybody check the bearing, or did they only reset the alarm?"),
    (0, "They only reset it. I would like to replace the bearing before the weekend."),
    (1, "We have two spare bearings in the store room, so that should be fine."),
    (2, "Good. Then let us stop the line at four and do it properly this time."),
    (0, "Agreed. I will tell the operators and write it in the maintenance log."),
    (1, "And please check the camera station too, it rejected a lot of parts today."),
)


@dataclass(frozen=True)
class Utterance:
    """Who spoke when (seconds from the start of the conversation)."""

    speaker: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Room:
    """What the microphone adds: reverberation time (0: none), noise level relative to the speech, level swing."""

    rt60_s: float = 0.0
    snr_db: float | None = None
    level_db: tuple[float, float] = (0.0, 0.0)
    overlap_share: float = 0.0
    pause_s: tuple[float, float] = (0.3, 1.2)


def trim(audio: np.ndarray, level: float = 1e-3) -> np.ndarray:
    """Drop the synthesiser's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(audio) > level)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]


def impulse_response(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: exponentially decaying noise (60 dB down after rt60_s) after the direct sound."""
    length = int(rt60_s * SAMPLE_RATE)
    decay = np.exp(-6.9 * np.arange(length) / max(length, 1))
    response = rng.standard_normal(length) * decay * 0.3
    response[0] = 1.0
    return (response / np.sqrt(np.sum(response**2))).astype(np.float32)


def mix(clips: list[tuple[int, np.ndarray]], room: Room, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                list[Utterance]]:
    """Place (speaker, audio) clips one after another with pauses (or overlaps), then add the room."""
    starts: list[int] = []
    cursor = 0.5 * SAMPLE_RATE
    for _, audio in clips:
        if starts and rng.random() < room.overlap_share:
            start = cursor - rng.uniform(0.3, 0.8) * SAMPLE_RATE  # an interruption: starts before the other ends
        else:
            start = cursor + rng.uniform(*room.pause_s) * SAMPLE_RATE
        starts.append(int(max(start, 0)))
        cursor = max(cursor, starts[-1] + len(audio))
    total = np.zeros(int(cursor + 0.5 * SAMPLE_RATE), dtype=np.float32)
    truth = []
    for (speaker, audio), start in zip(clips, starts, strict=True):
        gain = 10 ** (rng.uniform(*room.level_db) / 20)
        total[start : start + len(audio)] += audio * gain
        truth.append(Utterance(speaker, start / SAMPLE_RATE, (start + len(audio)) / SAMPLE_RATE))
    if room.rt60_s > 0:
        total = fftconvolve(total, impulse_response(room.rt60_s, rng))[: len(total)].astype(np.float32)
    if room.snr_db is not None:
        speech_rms = float(np.sqrt(np.mean(total[np.abs(total) > 1e-3] ** 2))) if np.any(total) else 0.1
        total += (rng.standard_normal(len(total)) * speech_rms * 10 ** (-room.snr_db / 20)).astype(np.float32)
    peak = float(np.max(np.abs(total))) or 1.0
    return (total * (0.9 / peak)).astype(np.float32), truth


def conversation(voices: tuple[Voice, ...] | list[Voice], lines: tuple[tuple[int, str], ...] | list[tuple[int, str]],
                 room: Room, seed: int) -> tuple[np.ndarray, list[Utterance]]:
    """Synthesise ``lines`` ((speaker index, text)) with ``voices`` and mix them in ``room``."""
    rng = np.random.default_rng(seed)
    clips = [(speaker, trim(synthesise(voices[speaker], text))) for speaker, text in lines]
    return mix(clips, room, rng)


def load_demo() -> tuple[np.ndarray, list[Utterance]]:
    """The shipped demo conversation: float32 16 kHz mono and its truth."""
    with np.load(DEMO_CONVERSATION) as data:
        audio = data["audio"].astype(np.float32) / 32768.0
        truth = [Utterance(int(s), float(a), float(b)) for s, a, b in data["truth"]]
    return audio, truth


def main() -> None:
    """Rebuild the demo's conversation asset (needs espeak-ng)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=DEMO_CONVERSATION)
    out = parser.parse_args().out
    audio, truth = conversation(DEMO_VOICES, DEMO_LINES, Room(rt60_s=0.15, snr_db=None, level_db=(-4, 0),
                                                              overlap_share=0.15), seed=DEMO_SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, audio=np.round(audio * 32767).astype(np.int16),
                        truth=np.array([(u.speaker, u.start_s, u.end_s) for u in truth], dtype=np.float64))
    print(f"{out}: {len(audio) / SAMPLE_RATE:.1f} s, {len(truth)} turns, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()

"""Synthetic speakers from Debian's speech synthesisers (espeak-ng, flite, festival), as 16 kHz mono audio.

A :class:`Voice` is one synthetic speaker: an engine, its voice, and the settings that make it sound like
one person (espeak-ng variant, pitch and rate).  Training data, test conversations and the demo's
shipped conversation are all made with :func:`synthesise`.  The synthesisers are only needed to make
data, never by the agent.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
Engine = Literal["espeak-ng", "flite", "festival"]
_BINARIES: dict[str, str] = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: ``name`` is the engine's voice (espeak-ng ``en-us``, flite ``slt``, festival
    ``kal_diphone``); ``variant`` an espeak-ng variant (``m3``, ``Annie``); ``pitch`` 0-99 (espeak-ng) and
    ``rate`` in words per minute (espeak-ng) or as a duration stretch x100 (flite, festival: 100 = normal)."""

    engine: Engine
    name: str
    variant: str = ""
    pitch: int = 50
    rate: int = 160

    @property
    def id(self) -> str:
        """A stable speaker id, e.g. ``espeak-ng:en-us+m3:p40:r150``."""
        variant = f"+{self.variant}" if self.variant else ""
        return f"{self.engine}:{self.name}{variant}:p{self.pitch}:r{self.rate}"


def available_engines() -> set[str]:
    """The synthesisers installed on this machine (Debian: espeak-ng, flite, festival)."""
    return {engine for engine, binary in _BINARIES.items() if shutil.which(binary)}


def synthesise(voice: Voice, text: str, timeout_s: float = 60.0) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono samples at 16 kHz in [-1, 1]."""
    if voice.engine == "espeak-ng":
        spec = f"{voice.name}+{voice.variant}" if voice.variant else voice.name
        command = ["espeak-ng", "-v", spec, "-p", str(voice.pitch), "-s", str(voice.rate), "--stdout", text]
        wav = subprocess.run(command, capture_output=True, check=True, timeout=timeout_s).stdout
        return _decode_wav(wav)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        stretch = f"{100.0 / max(voice.rate, 1):.3f}"
        if voice.engine == "flite":
            command = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch}",
                       "--setf", f"int_f0_target_mean={60 + 2 * voice.pitch}", "-t", text, "-o", str(out)]
            subprocess.run(command, capture_output=True, check=True, timeout=timeout_s)
        else:
            settings = f"(voice_{voice.name}) (Parameter.set 'Duration_Stretch {stretch})"
            command = ["text2wave", "-eval", settings, "-o", str(out)]
            subprocess.run(command, input=text.encode(), capture_output=True, check=True, timeout=timeout_s)
        return _decode_wav(out.read_bytes())


def _decode_wav(data: bytes) -> np.ndarray:
    """16-bit PCM WAV bytes (any rate, any channels) -> float32 mono at 16 kHz."""
    with wave.open(io.BytesIO(data)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    audio = pcm.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        divisor = int(np.gcd(rate, SAMPLE_RATE))
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    return audio.astype(np.float32)

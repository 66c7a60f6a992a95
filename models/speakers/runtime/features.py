"""The audio front end shared by training and the agent: 16 kHz mono, log-mel spectrogram, 0.4 s segments.

As in the paper (TASKS.md section 5): n_fft 1024, hop 10 ms, 128 mel bands, ``log10(1 + 10000 x)`` of the
power mel spectrogram, segments of 40 frames.  numpy/scipy only, so the agent needs no audio library.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
N_FFT = 1024
HOP = 160
N_MELS = 128
SEGMENT_FRAMES = 40


def to_mono_16k(samples: np.ndarray, sample_rate: float) -> np.ndarray:
    """(n,) or (n, channels) PCM at any rate -> float32 mono at 16 kHz (channel mean, polyphase resampling)."""
    audio = np.asarray(samples, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    rate = round(sample_rate)
    if rate != SAMPLE_RATE:
        divisor = np.gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor)
    return audio.astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), librosa's default."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3))


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters, Slaney-normalised (equal area), 0 to 8 kHz."""
    bins = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.asarray(0.0)), _hz_to_mel(np.asarray(SAMPLE_RATE / 2)), N_MELS + 2))
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:, None] - edges[1:-1, None])
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono float audio -> (frames, N_MELS) float32, one frame per 10 ms (centred, reflect-padded)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < 2:
        return np.zeros((0, N_MELS), dtype=np.float32)
    padded = np.pad(audio, N_FFT // 2, mode="reflect" if audio.size > N_FFT // 2 else "constant")
    count = 1 + (padded.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    return np.log10(1.0 + 10_000.0 * (power.astype(np.float32) @ mel_filterbank().T))


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic, as librosa/scipy "hann"


def segments(mel: np.ndarray, hop: int = SEGMENT_FRAMES // 2) -> np.ndarray:
    """(frames, N_MELS) -> (n, SEGMENT_FRAMES, N_MELS) overlapping segments; n = 0 if shorter than one."""
    if mel.shape[0] < SEGMENT_FRAMES:
        return np.zeros((0, SEGMENT_FRAMES, N_MELS), dtype=np.float32)
    starts = range(0, mel.shape[0] - SEGMENT_FRAMES + 1, hop)
    return np.stack([mel[start : start + SEGMENT_FRAMES] for start in starts]).astype(np.float32)

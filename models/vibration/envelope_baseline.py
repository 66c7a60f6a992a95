"""A simple spectral-kurtosis / envelope detector, the yardstick the vibration task is compared with (evaluation only).

Per window (first channel): the short-time spectrum's spectral kurtosis picks the most impulsive 1 kHz band
between 1 and 9 kHz (a one-level kurtogram); that band's envelope (Hilbert magnitude) is taken and its
spectrum normalised by its median level.  At each bearing fault frequency the detector is *told* (BPFO,
BPFI, 2 x BSF from the configured geometry at the configured shaft speed) it sums the normalised envelope
lines of the first three harmonics, each the highest bin within +-3 % (the speed is only nominal).  The
first ``baseline_windows`` windows learn each line's log level (mean and spread); afterwards a window's
score is the largest z-score of the three, smoothed (EWMA 0.3), with the threshold set like the task's
(median + 2 x (99th percentile - median) of the smoothed baseline scores, at least 3) and an alarm when
3 of the last 5 windows exceed it; the fault named is the line with the largest z-score.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from models.vibration.runtime import envelope
from sensors.bearing import FAULT_TYPES, BearingGeometry

BANDS_HZ = [(low, low + 1000.0) for low in np.arange(1000.0, 8001.0, 500.0)]
TOLERANCE = 0.03
HARMONICS = 3


def fault_lines(geometry: BearingGeometry, shaft_hz: float) -> dict[str, float]:
    """The lines a bearing fault puts into the envelope spectrum at this speed (:func:`envelope.fault_lines`)."""
    return envelope.fault_lines(geometry.frequencies(shaft_hz))


def kurtogram_band(x: np.ndarray, sample_rate: float) -> tuple[float, float]:
    """The 1 kHz band with the highest mean spectral kurtosis (|STFT|^4 / (|STFT|^2)^2 - 2)."""
    freqs, _, spectrum = signal.stft(x, sample_rate, nperseg=128, noverlap=64)
    power = np.abs(spectrum) ** 2
    kurtosis = np.mean(power**2, axis=1) / np.maximum(np.mean(power, axis=1) ** 2, 1e-30) - 2
    best = max(BANDS_HZ, key=lambda band: float(np.mean(kurtosis[(freqs >= band[0]) & (freqs < band[1])])))
    return float(best[0]), float(min(best[1], 0.45 * sample_rate))


def envelope_levels(x: np.ndarray, sample_rate: float, lines: dict[str, float]) -> dict[str, float]:
    """Each line's summed normalised envelope amplitude over its first harmonics."""
    x = np.asarray(x, dtype=float) - float(np.mean(x))
    low, high = kurtogram_band(x, sample_rate)
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    spectrum = np.fft.rfft(x)
    spectrum[(freqs < low) | (freqs > high)] = 0
    band = np.fft.irfft(spectrum, len(x))
    envelope = np.abs(signal.hilbert(band))
    amplitude = np.abs(np.fft.rfft(envelope - envelope.mean()))
    usable = (freqs > 2) & (freqs < min(2000.0, sample_rate / 4))
    floor = max(float(np.median(amplitude[usable])), 1e-12)
    levels = {}
    for name, hz in lines.items():
        total = 0.0
        for harmonic in range(1, HARMONICS + 1):
            near = np.abs(freqs - harmonic * hz) <= max(TOLERANCE * harmonic * hz, freqs[1])
            total += float(np.max(amplitude[near])) / floor if near.any() else 0.0
        levels[name] = total
    return levels


@dataclass
class EnvelopeBaseline:
    """One machine's envelope detector: learns, then scores windows and raises like the task (k of n)."""

    lines: dict[str, float]
    baseline_windows: int = 120
    alpha: float = 0.3
    k: int = 3
    n: int = 5
    learnt: list[np.ndarray] = field(default_factory=list)
    mean: np.ndarray | None = None
    spread: np.ndarray | None = None
    threshold: float = 0.0
    median: float = 0.0
    smoothed: float | None = None
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=5))
    alarm: bool = False

    def update(self, x: np.ndarray, sample_rate: float) -> tuple[float | None, bool, str | None]:
        """(excess: 0 at normal, 1 at the threshold; None while learning), alarm on, the fault it points to."""
        levels = envelope_levels(x, sample_rate, self.lines)
        vector = np.log(np.maximum(np.array(list(levels.values())), 1e-9))
        if self.mean is None or self.spread is None:
            self.learnt.append(vector)
            if len(self.learnt) >= self.baseline_windows:
                self._fit()
            return None, False, None
        z = (vector - self.mean) / self.spread
        score = float(np.max(z))
        self.smoothed = score if self.smoothed is None else self.alpha * score + (1 - self.alpha) * self.smoothed
        self.recent.append(self.smoothed > self.threshold)
        if not self.alarm and sum(self.recent) >= self.k:
            self.alarm = True
        elif self.alarm and sum(list(self.recent)[-self.n:]) == 0:
            self.alarm = False
        fault = FAULT_TYPES[list(levels)[int(np.argmax(z))]]
        excess = (self.smoothed - self.median) / max(self.threshold - self.median, 1e-9)
        return excess, self.alarm, fault

    def _fit(self) -> None:
        learnt = np.array(self.learnt)
        self.mean = learnt.mean(axis=0)
        self.spread = np.maximum(learnt.std(axis=0), 0.05)
        scores = np.max((learnt - self.mean) / self.spread, axis=1)
        start = [scores[0] * (1 - self.alpha)]
        smoothed = np.array(signal.lfilter([self.alpha], [1, self.alpha - 1], scores, zi=start)[0])
        self.median = float(np.median(smoothed))
        self.threshold = max(self.median + 2 * (float(np.quantile(smoothed, 0.99)) - self.median), 3.0)
        self.learnt = []

"""Fault evidence without a bearing geometry: the dominant envelope-spectrum line, in Hz and shaft orders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

#: orders of shaft speed searched: bearing fault frequencies lie between the cage's (~0.4) and an inner race's
ORDER_RANGE = (0.3, 15.0)
#: lines this close to a whole order (shaft harmonics: unbalance, looseness modulate the envelope too) are skipped
HARMONIC_TOLERANCE = 0.05
#: a line must stand this far above the median of the searched range to be reported
MIN_PROMINENCE = 4.0


@dataclass(frozen=True)
class EnvelopePeak:
    """The strongest non-synchronous line of the envelope spectrum."""

    hz: float
    #: the line's frequency in multiples of the shaft speed
    order: float
    #: its amplitude over the median envelope-spectrum level of the searched range
    prominence: float


def envelope_peak(samples: np.ndarray, sample_rate: float, shaft_hz: float,
                  band: tuple[float, float] = (1 / 16, 0.45)) -> EnvelopePeak | None:
    """The most prominent envelope line of a (samples, channels) window over all channels, between
    :data:`ORDER_RANGE` x ``shaft_hz`` and off the shaft harmonics; None if none stands out
    (:data:`MIN_PROMINENCE`). ``band`` is the demodulation band as fractions of the sample rate,
    as :class:`models.vibration.runtime.features.FeatureSettings` has it."""
    if shaft_hz <= 0 or len(samples) < 64:
        return None
    x = np.asarray(samples, dtype=np.float64).T  # (channels, n)
    n = x.shape[-1]
    spectrum = fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)
    lo, hi = max(1, int(band[0] * n)), min(spectrum.shape[-1], int(band[1] * n))
    analytic = np.zeros((len(x), n), dtype=np.complex128)
    analytic[:, lo:hi] = 2.0 * spectrum[:, lo:hi]
    envelope = np.abs(fft.ifft(analytic, axis=-1))
    env_spectrum = np.abs(fft.rfft(envelope - envelope.mean(axis=-1, keepdims=True), axis=-1))
    orders = np.arange(env_spectrum.shape[-1]) * (sample_rate / n) / shaft_hz
    searched = (orders >= ORDER_RANGE[0]) & (orders <= ORDER_RANGE[1])
    off_harmonics = searched & (np.abs(orders - np.round(orders)) > HARMONIC_TOLERANCE)
    if not off_harmonics.any():
        return None
    level = np.median(env_spectrum[:, searched], axis=-1, keepdims=True) + 1e-12
    prominence = np.where(off_harmonics, env_spectrum / level, 0.0)
    channel, line = np.unravel_index(int(np.argmax(prominence)), prominence.shape)
    if prominence[channel, line] < MIN_PROMINENCE:
        return None
    return EnvelopePeak(round(float(orders[line] * shaft_hz), 2), round(float(orders[line]), 3),
                        round(float(prominence[channel, line]), 1))

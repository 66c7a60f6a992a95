"""Fault evidence from the envelope spectrum: with a bearing geometry, the harmonic family of each fault frequency;
without one, the dominant line, in Hz and shaft orders."""

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


def envelope_spectrum(samples: np.ndarray, sample_rate: float,
                      band: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, amplitude per channel and frequency) of the envelope of a (samples, channels) window
    demodulated in ``band`` (fractions of the sample rate)."""
    x = np.asarray(samples, dtype=np.float64).T  # (channels, n)
    n = x.shape[-1]
    spectrum = fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)
    lo, hi = max(1, int(band[0] * n)), min(spectrum.shape[-1], int(band[1] * n))
    analytic = np.zeros((len(x), n), dtype=np.complex128)
    analytic[:, lo:hi] = 2.0 * spectrum[:, lo:hi]
    envelope = np.abs(fft.ifft(analytic, axis=-1))
    amplitude = np.abs(fft.rfft(envelope - envelope.mean(axis=-1, keepdims=True), axis=-1))
    return np.arange(amplitude.shape[-1]) * (sample_rate / n), amplitude


def envelope_peak(samples: np.ndarray, sample_rate: float, shaft_hz: float,
                  band: tuple[float, float] = (1 / 16, 0.45)) -> EnvelopePeak | None:
    """The most prominent envelope line of a (samples, channels) window over all channels, between
    :data:`ORDER_RANGE` x ``shaft_hz`` and off the shaft harmonics; None if none stands out
    (:data:`MIN_PROMINENCE`). ``band`` is the demodulation band as fractions of the sample rate,
    as :class:`models.vibration.runtime.features.FeatureSettings` has it."""
    if shaft_hz <= 0 or len(samples) < 64:
        return None
    hz, env_spectrum = envelope_spectrum(samples, sample_rate, band)
    orders = hz / shaft_hz
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


#: harmonics of a fault frequency looked at (a spall's impacts are short: their lines repeat)
FAMILY_HARMONICS = 3
#: a harmonic is looked for this far (relative) from where the geometry puts it: rolling elements slip
FAMILY_TOLERANCE = 0.02
#: a family's mean prominence must reach this to name its fault, and beat the runner-up by FAMILY_MARGIN
FAMILY_MIN = 4.0
FAMILY_MARGIN = 1.3


def fault_lines(frequencies: dict[str, float]) -> dict[str, float]:
    """The lines bearing faults put into the envelope spectrum, from the fault frequencies (Hz, by name, as
    :meth:`sensors.bearing.BearingGeometry.frequencies` gives them): BPFO, BPFI and 2 x BSF (a rolling
    element's spall strikes both races once per spin); the cage (FTF) makes no impacts and is left out."""
    return {"bpfo": frequencies["bpfo"], "bpfi": frequencies["bpfi"], "bsf": 2 * frequencies["bsf"]}


def fault_families(samples: np.ndarray, sample_rate: float, frequencies: dict[str, float],
                   band: tuple[float, float] = (1 / 16, 0.45)) -> dict[str, float]:
    """For each fault frequency (Hz, by name as :meth:`sensors.bearing.BearingGeometry.frequencies` gives them),
    the mean prominence of its first :data:`FAMILY_HARMONICS` harmonics in the window's envelope spectrum
    (each the highest line within :data:`FAMILY_TOLERANCE` of where it should be, over the median level
    up to the highest harmonic looked at), the best channel's."""
    if len(samples) < 64 or not frequencies:
        return {}
    hz, amplitude = envelope_spectrum(samples, sample_rate, band)
    top = FAMILY_HARMONICS * max(frequencies.values()) * (1 + FAMILY_TOLERANCE)
    searched = (hz > 0) & (hz <= top)
    if searched.sum() < 8:
        return {}
    prominence = amplitude / (np.median(amplitude[:, searched], axis=-1, keepdims=True) + 1e-12)
    step = hz[1] - hz[0]
    families = {}
    for name, frequency in frequencies.items():
        lines = []
        for k in range(1, FAMILY_HARMONICS + 1):
            tolerance = max(FAMILY_TOLERANCE * k * frequency, 1.5 * step)
            near = np.abs(hz - k * frequency) <= tolerance
            lines.append(prominence[:, near].max(axis=-1) if near.any() else np.zeros(len(prominence)))
        families[name] = round(float(np.max(np.mean(lines, axis=0))), 2)
    return families


def family_fault(families: dict[str, float]) -> str | None:
    """The name of the fault frequency whose family stands out (:data:`FAMILY_MIN`, :data:`FAMILY_MARGIN`)."""
    ranked = sorted(families, key=lambda name: families[name], reverse=True)
    if not ranked or families[ranked[0]] < FAMILY_MIN:
        return None
    if len(ranked) > 1 and families[ranked[0]] < FAMILY_MARGIN * families[ranked[1]]:
        return None
    return ranked[0]

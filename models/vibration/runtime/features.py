"""Vibration features in fast numpy, vectorised over windows and channels; the agent's run-time path.

Per channel, :data:`FEATURE_NAMES`:

- time domain: ``rms``, ``peak`` (max |x|), ``peak_to_peak``, ``crest_factor`` (peak / rms),
  ``kurtosis`` and ``skewness`` (pandas' bias-corrected G2 and G1, as tsfresh computes them),
  ``mean_abs_change`` (mean |x[i+1] - x[i]|, weighted towards high frequencies);
- ``band0`` .. ``band5``: mean-square power in octave bands of the Nyquist range
  ([0, 1/32), [1/32, 1/16), ..., [1/2, 1] x Nyquist; at 20 kHz the top band is 5-10 kHz), so
  the bands sum to ``rms**2``;
- ``shaft_1x``, ``shaft_2x``: amplitude of the shaft frequency and its second harmonic
  (unbalance, misalignment, looseness);
- ``env_ftf``, ``env_bsf``, ``env_bpfo``, ``env_bpfi``: prominence of the bearing fault
  frequencies (and their second harmonic) in the envelope spectrum of the high band where
  impacts ring the structure, relative to the median envelope spectrum level; a value near 2 is
  noise, a fault gives tens.

The time-domain values and band powers are tested to equal tsfresh's on the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft

from models.vibration.runtime.shaft import UnusableWindow, estimate_shaft
from sensors.bearing import FAULT_FREQUENCIES, BearingGeometry

N_BANDS = 6
#: windows with more repeated successive samples than this are sensor dropouts, not machine data
MAX_FLAT_FRACTION = 0.05
#: how far (in standard deviations) a lone sample must stand out to count as an electrical spike
SPIKE_SIGMAS = 8.0
TIME_FEATURES = ("rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness", "mean_abs_change")
BAND_FEATURES = tuple(f"band{i}" for i in range(N_BANDS))
SHAFT_FEATURES = ("shaft_1x", "shaft_2x")
ENVELOPE_FEATURES = tuple(f"env_{name}" for name in FAULT_FREQUENCIES)
#: features computed for each channel, in this order
FEATURE_NAMES: list[str] = [*TIME_FEATURES, *BAND_FEATURES, *SHAFT_FEATURES, *ENVELOPE_FEATURES]
#: what the agent monitors by default: the features tsfresh's relevance tests select on the simulated
#: fleet (``python -m models.vibration.select_features``, report in models/vibration/reports/);
#: skewness and the cage frequency's envelope line did not pass for these faults
SELECTED_FEATURES: list[str] = [name for name in FEATURE_NAMES if name not in ("skewness", "env_ftf")]
#: features that are positive by construction and spread over decades: normalised on a log scale
LOG_FEATURES = frozenset(FEATURE_NAMES) - {"kurtosis", "skewness"}


def flat_fraction(samples: np.ndarray) -> np.ndarray:
    """Share of repeated successive samples in (..., samples, channels), worst channel: dropouts are flat."""
    return np.asarray((np.diff(samples, axis=-2) == 0).mean(axis=-2).max(axis=-1))


def remove_spikes(samples: np.ndarray, sigmas: float = SPIKE_SIGMAS) -> tuple[np.ndarray, int]:
    """Replace isolated one-sample spikes (electrical, not mechanical) by their neighbours' mean.

    A spike stands ``sigmas`` standard deviations out while both neighbours stay under a quarter of
    it; an impact ringing a resonance below ~6 kHz (at 20 kHz) never does, so faults are kept.
    Works on (..., samples, channels); returns the cleaned copy and how many samples were replaced.
    """
    x = np.array(samples, dtype=np.float32)
    n = x.shape[-2]
    magnitude = np.abs(x)
    candidates = np.nonzero(magnitude > sigmas * x.std(axis=-2, keepdims=True))
    if not len(candidates[0]) or n < 3:
        return x, 0
    *lead, index, channel = candidates
    before = np.where(index > 0, index - 1, index + 1)
    after = np.where(index < n - 1, index + 1, index - 1)
    left, right = x[tuple([*lead, before, channel])], x[tuple([*lead, after, channel])]
    isolated = np.maximum(np.abs(left), np.abs(right)) < 0.25 * magnitude[candidates]
    spikes = tuple(part[isolated] for part in candidates)
    x[spikes] = 0.5 * (left[isolated] + right[isolated])
    return x, int(isolated.sum())


def band_edges(sample_rate: float) -> np.ndarray:
    """The N_BANDS + 1 band edges in Hz: octaves below Nyquist, the lowest band starting at 0."""
    nyquist = sample_rate / 2
    return np.array([0.0, *(nyquist / 2.0 ** np.arange(N_BANDS - 1, 0, -1)), nyquist])


def feature_names(channels: int, subset: list[str] | None = None) -> list[str]:
    """Flat names of a multi-channel feature vector, e.g. ``ch0.rms``; channel-major.

    ``subset`` (base names, default all of FEATURE_NAMES) keeps only those, in FEATURE_NAMES order.
    """
    chosen = FEATURE_NAMES if subset is None else [name for name in FEATURE_NAMES if name in subset]
    return [f"ch{c}.{name}" for c in range(channels) for name in chosen]


def column_index(channels: int, names: list[str]) -> np.ndarray:
    """Where each flat name sits in the full vector of :func:`window_features`; ValueError if absent."""
    position = {name: i for i, name in enumerate(feature_names(channels))}
    missing = [name for name in names if name not in position]
    if missing:
        raise UnusableWindow(f"features {missing[:3]} do not exist for {channels} channel(s)")
    return np.array([position[name] for name in names], dtype=int)


@dataclass(frozen=True)
class FeatureSettings:
    """What the features need to know about the machine and how to look for its fault frequencies."""

    geometry: BearingGeometry = field(default_factory=BearingGeometry)
    #: known shaft speed; None estimates it from each window's spectrum within ``shaft_range_hz``
    shaft_hz: float | None = None
    shaft_range_hz: tuple[float, float] = (5.0, 120.0)
    #: demodulation band for the envelope, as fractions of the sample rate
    envelope_band: tuple[float, float] = (1 / 16, 0.45)
    #: relative search tolerance around each expected frequency (slip, speed estimate error)
    tolerance: float = 0.02


def window_features(samples: np.ndarray, sample_rate: float, settings: FeatureSettings | None = None,
                    max_flat: float = MAX_FLAT_FRACTION) -> tuple[np.ndarray, float, int]:
    """The monitor's input for one (samples, channels) window: checked, despiked, flattened.

    Returns (feature vector channel-major as :func:`feature_names`, shaft Hz used, spikes removed);
    raises :class:`UnusableWindow` for a dropout.
    """
    flat = float(flat_fraction(samples))
    if flat > max_flat:
        raise UnusableWindow(f"flat-lined: {flat:.0%} of successive samples repeat (sensor dropout)")
    cleaned, spikes = remove_spikes(samples)
    values, shaft = extract(cleaned, sample_rate, settings)
    return values.ravel(), shaft, spikes


def prepare_windows(windows: np.ndarray, sample_rate: float, settings: FeatureSettings | None = None,
                    max_flat: float = MAX_FLAT_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`window_features` for a batch (windows, samples, channels), offline.

    Returns (features of the usable windows (u, channels x features), their shaft Hz (u,), the
    usable mask (windows,)); unusable windows are left out, as the agent rejects them.
    """
    usable = flat_fraction(windows) <= max_flat
    if not usable.any():
        return np.zeros((0, windows.shape[2] * len(FEATURE_NAMES))), np.zeros(0), usable
    cleaned, _ = remove_spikes(windows[usable])
    values, shaft = extract_windows(cleaned, sample_rate, settings)
    return values.reshape(len(values), -1), shaft, usable


def extract(samples: np.ndarray, sample_rate: float, settings: FeatureSettings | None = None
            ) -> tuple[np.ndarray, float]:
    """Features of one (samples, channels) window: ((channels, len(FEATURE_NAMES)), shaft Hz used)."""
    values, shaft = extract_windows(np.asarray(samples)[np.newaxis], sample_rate, settings)
    return values[0], float(shaft[0])


def extract_windows(windows: np.ndarray, sample_rate: float, settings: FeatureSettings | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Features of (windows, samples, channels): ((windows, channels, features), shaft Hz per window)."""
    settings = settings or FeatureSettings()
    if windows.ndim != 3 or windows.shape[1] < 64:
        raise ValueError(f"expected (windows, samples>=64, channels), got shape {windows.shape}")
    x = np.ascontiguousarray(np.swapaxes(windows, 1, 2), dtype=np.float64)  # (w, ch, n)
    n = x.shape[-1]
    spectrum = fft.rfft(x, axis=-1)
    power = np.abs(spectrum) ** 2
    freqs = np.arange(power.shape[-1]) * (sample_rate / n)
    shaft = (np.full(len(x), settings.shaft_hz) if settings.shaft_hz
             else estimate_shaft(spectrum, freqs[1], settings.shaft_range_hz))
    bands = _band_powers(power, freqs, n, sample_rate)
    parts = [
        _time_features(x, spectrum[..., 0].real / n, bands.sum(axis=-1)),
        bands,
        _line_amplitudes(power, freqs, n, shaft[:, None] * np.array([1.0, 2.0]), settings.tolerance),
        _envelope_features(spectrum, n, sample_rate, shaft, settings),
    ]
    return np.concatenate(parts, axis=-1), shaft


def _time_features(x: np.ndarray, mean: np.ndarray, mean_square: np.ndarray) -> np.ndarray:
    """Time-domain features; the mean and mean square come from the spectrum (DC bin, Parseval)."""
    n = x.shape[-1]
    rms = np.sqrt(mean_square)
    high, low = x.max(axis=-1), x.min(axis=-1)
    peak = np.maximum(high, -low)
    d = x - mean[..., None]
    d2 = d * d
    m2 = d2.sum(axis=-1)
    m3 = np.einsum("...i,...i->...", d2, d)
    m4 = np.einsum("...i,...i->...", d2, d2)
    with np.errstate(invalid="ignore", divide="ignore"):
        # pandas' adjusted Fisher-Pearson G1 and G2, which tsfresh's skewness and kurtosis are
        skew = np.where(m2 > 0, n * (n - 1) ** 0.5 / (n - 2) * m3 / m2**1.5, 0.0)
        kurt = np.where(m2 > 0, n * (n + 1) * (n - 1) * m4 / ((n - 2) * (n - 3) * m2 * m2)
                        - 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)), 0.0)
        crest = np.where(rms > 0, peak / rms, 0.0)
    change = np.abs(np.diff(x, axis=-1)).mean(axis=-1)
    return np.stack([rms, peak, high - low, crest, kurt, skew, change], axis=-1)


def _band_powers(power: np.ndarray, freqs: np.ndarray, n: int, sample_rate: float) -> np.ndarray:
    """Mean-square power per band from the one-sided spectrum (Parseval: the bands sum to mean(x**2))."""
    weighted = power * (2.0 / (n * n))
    weighted[..., 0] *= 0.5
    if n % 2 == 0:
        weighted[..., -1] *= 0.5
    starts = np.searchsorted(freqs, band_edges(sample_rate)[:-1], side="left")
    return np.add.reduceat(weighted, starts, axis=-1)


def _line_amplitudes(power: np.ndarray, freqs: np.ndarray, n: int, targets: np.ndarray,
                     tolerance: float) -> np.ndarray:
    """Amplitude of a sinusoid near each target (w, t): power summed over the lines' bins and leakage.

    Summing +-2 bins beyond the tolerance keeps an off-bin line's amplitude within a few percent
    (a rectangular window's scalloping alone would lose up to 36%).
    """
    resolution = freqs[1]
    span = targets * tolerance + 2 * resolution
    lo = np.clip(np.round((targets - span) / resolution), 1, len(freqs) - 1).astype(int)
    hi = np.clip(np.round((targets + span) / resolution), 1, len(freqs) - 1).astype(int)
    cumulative = np.cumsum(power, axis=-1)
    w, ch, _ = power.shape
    upper = np.take_along_axis(cumulative, hi.reshape(w, 1, -1).repeat(ch, axis=1), axis=-1)
    lower = np.take_along_axis(cumulative, (lo - 1).reshape(w, 1, -1).repeat(ch, axis=1), axis=-1)
    return 2.0 * np.sqrt(np.maximum(upper - lower, 0.0)) / n


def _peaks(spectrum: np.ndarray, freqs: np.ndarray, targets: np.ndarray, tolerance: float) -> np.ndarray:
    """Max of spectrum (w, ch, bins) within +-tolerance (at least one bin) of targets (w, t): (w, ch, t)."""
    resolution = freqs[1]
    span = np.maximum(targets * tolerance, resolution)
    lo = np.clip(np.floor((targets - span) / resolution), 0, len(freqs) - 1).astype(int)
    hi = np.clip(np.ceil((targets + span) / resolution), 0, len(freqs) - 1).astype(int)
    width = int((hi - lo).max()) + 1
    offsets = np.arange(width)
    index = np.minimum(lo[..., None] + offsets, hi[..., None])  # (w, t, width), repeats the last bin
    w, ch, _ = spectrum.shape
    gathered = np.take_along_axis(spectrum, index.reshape(w, 1, -1).repeat(ch, axis=1), axis=-1)
    return gathered.reshape(w, ch, *index.shape[1:]).max(axis=-1)


def _envelope_features(spectrum: np.ndarray, n: int, sample_rate: float, shaft: np.ndarray,
                       settings: FeatureSettings) -> np.ndarray:
    """Prominence of each fault frequency (1x and 2x) in the envelope spectrum of the high band."""
    resolution = sample_rate / n
    lo = max(1, int(settings.envelope_band[0] * sample_rate / resolution))
    hi = min(spectrum.shape[-1], int(settings.envelope_band[1] * sample_rate / resolution))
    # Single precision is plenty for a prominence ratio and halves the cost of the two extra FFTs.
    analytic = np.zeros((*spectrum.shape[:-1], n), dtype=np.complex64)
    analytic[..., lo:hi] = 2.0 * spectrum[..., lo:hi]
    envelope = np.abs(fft.ifft(analytic, axis=-1, overwrite_x=True))
    envelope -= envelope.mean(axis=-1, keepdims=True)
    env_spectrum = np.abs(fft.rfft(envelope, axis=-1))
    freqs = np.arange(env_spectrum.shape[-1]) * resolution
    orders = settings.geometry.orders()
    fault = shaft[:, None] * np.array([orders[name] for name in FAULT_FREQUENCIES])  # (w, 4)
    # The reference level covers the fault frequencies' neighbourhood, not the whole envelope band.
    top = min(env_spectrum.shape[-1], int(3 * fault.max() / resolution) + 2)
    floor = np.median(env_spectrum[..., 1:top], axis=-1, keepdims=True) + 1e-12
    prominence = _peaks(env_spectrum, freqs, np.concatenate([fault, 2 * fault], axis=1), settings.tolerance)
    k = len(FAULT_FREQUENCIES)
    return (0.5 * (prominence[..., :k] + prominence[..., k:])) / floor

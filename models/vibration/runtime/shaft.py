"""Shaft speed from a window's spectrum when it is not configured, in numpy, vectorised over windows.

The strongest line of the raw spectrum is not the shaft: coloured (pink, brown) noise rises towards
low frequencies, mains hum can be stronger than 1x, and 2x is stronger than 1x on a misaligned
machine.  So the spectrum is whitened by its local noise floor and each candidate speed is scored by
its harmonic family: how far its 1x, 2x and 3x lines stand out of the floor.

- Whitening: each bin over the running median of the bins around it (a monotone floor, as coloured
  noise is, has its median at the middle, so a line's prominence does not depend on the slope).
- Hann window, applied in the frequency domain to the rectangular-window spectrum already computed
  for the features (no extra FFT): its side lobes fall fast, so brown noise below the search range
  does not leak over it, and a log-parabola through a Hann peak places it to a few hundredths of a bin.
- Score of a candidate f: sum over h = 1..3 of log(prominence / PROMINENCE), counting only lines
  above PROMINENCE and at most SUPPORT_CAP each, so that one very strong line (a gear mesh at 27x
  taken for the 3x of 9x) does not outweigh a family of moderate ones.  A candidate needs its 1x or
  2x line (the 1x of a misaligned or coloured-noise-buried machine may be weak, never both); on a tie
  (one clear line: f, f/2 via its 2x) the candidate whose 1x it is wins.  Half the speed lacks the
  odd lines, double the speed lacks 1x and 3x: both score less than the true speed as soon as a
  second harmonic stands out.
- Mains hum: a line within ``mains_tolerance`` of 50, 60, 100 or 120 Hz (the hum and its second
  harmonic) is no evidence as a candidate's 2x or 3x, nor as a 1x at 100/120 Hz; as a 1x at 50/60 Hz
  it counts a quarter (a 2-pole motor can turn there).  Hum sits on the grid frequency (within
  ~0.1 Hz); a 2-pole motor's shaft runs below it by its slip (0.5-3 %, 0.25-1.5 Hz at 50 Hz).  With
  1 s windows (1 Hz bins) a clear line is placed to ~0.05 Hz, so a slip above ~0.7 % is told apart,
  though a stronger hum 1 bin away still pulls the 1x line by up to ~0.5 %.  A shaft closer to the
  mains frequency is taken for hum: it wins on its quarter-weighted 1x and its 3x only when no family
  off the mains has support, and if none has any the strongest whitened line is used, which is the
  hum's and the shaft's frequency alike (within ~1 %).  If the shaft family is under the noise and
  the hum is clear, the estimate is the mains frequency: no window-by-window estimate can do better.
- The speed is the prominence- and order-weighted mean of the family's lines divided by their order
  (higher harmonics place the speed more precisely).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sensors.errors import RejectedInput

#: version of the estimate: a machine whose speed is estimated relearns its baseline when it changes
#: (1: the strongest raw line with a sub-harmonic rule; 2: whitened harmonic families, this module)
SHAFT_ESTIMATOR = 2
#: a line counts as harmonic support when its bin is this many times the local median floor
#: (white noise exceeds 10x its median in 0.1 % of bins)
PROMINENCE = 10.0
#: half-width of the running median that estimates the noise floor, Hz (wide enough that a few
#: lines - gear mesh sidebands - do not lift the median, narrow enough to follow coloured noise)
FLOOR_HALF_WIDTH_HZ = 15.0
#: weights of the 1x, 2x, 3x lines' support: with one clear line (2x and 3x under the noise or on the
#: hum) the candidate whose 1x it is beats f/2 and f/3 (whose 2x or 3x it would be) even when their
#: 1x bin is a noise peak just over PROMINENCE; a misaligned machine (2x strong) needs a 1x of about
#: 2.5 x PROMINENCE not to be taken at double speed
HARMONIC_WEIGHTS = np.array([1.25, 1.0, 1.0])
#: a line's support stops growing at this prominence (two decades over PROMINENCE)
SUPPORT_CAP = 1000.0
#: where electrical hum sits: the mains frequency (50 or 60 Hz) and its second harmonic
HUM_HZ = (50.0, 60.0, 100.0, 120.0)
#: a line on a hum frequency counts this much: it may be hum, or a shaft that turns at the mains speed
MAINS_WEIGHT = 0.25


class UnusableWindow(RejectedInput):
    """A window that carries no machine information (flat-lined dropout, too short)."""


def shaft_power(spectrum: np.ndarray, top: int) -> np.ndarray:
    """Hann-windowed power of bins 0..top-1 from a rectangular rFFT (w, ch, bins), summed over channels.

    A Hann window in time is the 3-tap kernel (-1/4, 1/2, -1/4) in frequency.
    """
    x = spectrum[..., :top + 1]
    hann = 0.5 * x[..., 1:top] - 0.25 * (x[..., :top - 1] + x[..., 2:top + 1])
    power = np.zeros((x.shape[0], top))
    power[:, 1:] = (np.abs(hann) ** 2).sum(axis=1)
    return power


def estimate_shaft(spectrum: np.ndarray, resolution: float, search: tuple[float, float],
                   mains_tolerance: float | None = None) -> np.ndarray:
    """Shaft frequency (Hz) per window from a rectangular rFFT (w, ch, bins) with ``resolution`` Hz bins.

    ``mains_tolerance`` (Hz) defaults to a quarter bin (where a weak line is placed) plus 0.1 Hz (the
    grid's own deviation).  Raises :class:`UnusableWindow` when the window cannot resolve ``search``.
    """
    bins = spectrum.shape[-1]
    lo = max(2, int(np.ceil(search[0] / resolution)))
    hi = min(bins - 3, int(search[1] / resolution))
    if hi <= lo:
        raise UnusableWindow(f"window too short to resolve the shaft speed in {search} Hz")
    half = max(3, round(FLOOR_HALF_WIDTH_HZ / resolution))
    top = min(bins - 1, 3 * hi + 3 + half)
    power = shaft_power(spectrum, top)
    floor = ndimage.median_filter(power, size=(1, 2 * half + 1), mode="nearest") + 1e-30
    prominence = power / floor
    tolerance = 0.25 * resolution + 0.1 if mains_tolerance is None else mains_tolerance
    # candidates on a half-bin grid, so that f/2 of a line at an odd bin is one
    candidates = np.arange(2 * lo, 2 * hi + 1) / 2.0
    peak, offset, support = _harmonics(power, prominence, candidates, resolution, tolerance)
    valid = (support[..., 0] > 0) | (support[..., 1] > 0)
    score = np.where(valid, support @ HARMONIC_WEIGHTS, 0.0)  # (w, candidates)
    rows = np.arange(len(power))
    best = np.argmax(score, axis=-1)
    found = score[rows, best] > 0
    # the family's lines, each divided by its order, weighted by prominence x order^2 (inverse variance)
    orders = np.arange(1, 4)
    position = (peak[rows, best] + offset[rows, best]) / orders
    weight = np.where(support[rows, best] > 0, prominence[rows[:, None], peak[rows, best]] * orders**2, 0.0)
    family = (position * weight).sum(axis=-1) / np.maximum(weight.sum(axis=-1), 1e-30)
    # no family off the mains: the strongest whitened line in the range (hum, or a shaft at mains speed)
    strongest = lo + np.argmax(prominence[:, lo:hi + 1], axis=-1)
    fallback = strongest + _interpolate(power, strongest)
    return np.where(found, family, fallback) * resolution


def _harmonics(power: np.ndarray, prominence: np.ndarray, candidates: np.ndarray, resolution: float,
               tolerance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each window, candidate (in bins) and order 1..3: the peak bin within +-1 bin of the order's
    place, its interpolated offset, and its support (log prominence over PROMINENCE, 0 if under it or
    on a mains multiple).  Shapes (w, candidates, 3)."""
    w, top = power.shape
    centre = np.round(candidates[:, None] * np.arange(1, 4)).astype(int)  # (c, 3)
    window = np.clip(centre[..., None] + np.arange(-1, 2), 1, top - 2)  # (c, 3, 3)
    gathered = power[:, window]  # (w, c, 3, 3)
    peak = np.take_along_axis(window[None].repeat(w, axis=0), np.argmax(gathered, axis=-1)[..., None],
                              axis=-1)[..., 0]  # (w, c, 3)
    offset = _interpolate(power, peak)
    hz = (peak + offset) * resolution
    on_mains = np.zeros(hz.shape, dtype=bool)
    for hum in HUM_HZ:
        on_mains |= np.abs(hz - hum) <= tolerance
    # a 2-pole motor may turn at (nearly) the mains frequency, so a 1x there counts a little; nothing
    # turns at twice it, and a 2x or 3x on the hum is no evidence for the candidate
    as_shaft = np.zeros(hz.shape[:-1], dtype=bool)
    for mains in HUM_HZ[:2]:
        as_shaft |= np.abs(hz[..., 0] - mains) <= tolerance
    rows = np.arange(w)[:, None, None]
    # only a local maximum is a line: the skirt of a neighbouring line (a Hann peak is 3 bins wide,
    # so hum at 50 Hz lifts 49 and 51 Hz) is not a line of its own
    skirt = (power[rows, peak - 1] > power[rows, peak]) | (power[rows, peak + 1] > power[rows, peak])
    support = np.log(np.clip(prominence[rows, peak], PROMINENCE, SUPPORT_CAP) / PROMINENCE)
    support[skirt | (centre[None] + 1 >= top)] = 0.0
    support[on_mains & ~(as_shaft[..., None] & (np.arange(3) == 0))] = 0.0
    support[..., 0] *= np.where(as_shaft, MAINS_WEIGHT, 1.0)
    return peak, offset, support


def _interpolate(power: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """Offset (bins, within +-0.5) of a Hann peak from its bin: a parabola through the log power.

    ``peak`` is (w, ...) bin indices, 1 <= peak <= bins - 2.
    """
    rows = np.arange(len(power)).reshape(-1, *([1] * (peak.ndim - 1)))
    left, mid, right = (np.log(power[rows, peak + k] + 1e-30) for k in (-1, 0, 1))
    curvature = left - 2 * mid + right
    shift = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return np.clip(shift, -0.5, 0.5)

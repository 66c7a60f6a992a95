"""Whole-page inference: staff-space scale estimate, rescale, overlapping tiles, de-duplication by centre (numpy).

The detector learnt symbols at one staff space (the distance between staff lines, in pixels), so
a page of any size and resolution is first rescaled to it: the staff space is the period of the
darkness profile down narrow vertical strips of the page (:func:`estimate_staff_space`).
Tiles overlap; each symbol is kept only by the tile whose centre is nearest to its own centre, so
symbols cut by one tile's border come whole from its neighbour and none comes twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from models.symbols.runtime.postprocess import Detections, detect

#: (batch, 1, T, T) float32 in [0, 1] -> energy logits, class logits, log sizes (each (batch, C, T, T))
RunTiles = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PageGeometry:
    """How pages are cut and read: the trained staff space, tile side and overlap, post-processing cuts."""

    staff_space: float = 12.0
    tile: int = 512
    overlap: int = 64
    energy_cut: int = 1  # chosen on validation pages: mAP 0.443 at 1, 0.439 at 2, 0.418 at 3, 0.324 at 4
    min_pixels: int = 2
    batch: int = 1  # full-resolution head maps are large: one tile at a time keeps memory down


@dataclass(frozen=True)
class PageResult:
    """Detections in page pixels, the estimated staff space (None: no staves found) and the scale used."""

    detections: Detections
    staff_space: float | None
    scale: float
    tiles: int


def estimate_staff_space(image: np.ndarray, strip: int = 32, strips: int = 48, min_peak: float = 0.1
                         ) -> float | None:
    """Centre-to-centre distance of staff lines in pixels, or None when the page shows no staves.

    Staff lines make the darkness profile down any narrow vertical strip periodic: after a ridge filter
    that keeps thin lines and drops blobs, the first strong peak of its autocorrelation (averaged over
    strips) is the staff space.  Narrow strips keep a tilted page's
    lines level enough; autocorrelation shrugs off noise and blur that break run-length estimates."""
    height, width = image.shape[:2] if image.ndim >= 2 else (0, 0)
    if height < 64 or width < strip:
        return None
    factor = max(1, min(height, width) // 1200)  # big pages: measure on a box-filtered reduction, 4x cheaper
    if factor > 1:
        reduced = estimate_staff_space(np.asarray(Image.fromarray(image).reduce(factor)), strip, strips, min_peak)
        return None if reduced is None else reduced * factor
    pixels = image.astype(np.float32)
    # darkness against the local paper, not a global cut: photos are unevenly lit
    darkness = np.clip(ndimage.uniform_filter(pixels, size=31) - pixels, 0, None)
    lefts = np.linspace(0, width - strip, min(strips, max(width // strip, 1))).astype(int)
    profiles = np.stack([darkness[:, left : left + strip].mean(axis=1) for left in lefts])
    # thin horizontal ridges only (staff lines up to ~10 px thick), not blobs, beams or the blur around them
    ridges = np.maximum(*(profiles - 0.5 * (np.roll(profiles, k, 1) + np.roll(profiles, -k, 1)) for k in (3, 6)))
    profiles = np.clip(ridges, 0, None)
    profiles -= profiles.mean(axis=1, keepdims=True)
    energy = (profiles**2).sum(axis=1)
    profiles, energy = profiles[energy > 1e-3], energy[energy > 1e-3]
    if len(profiles) == 0:
        return None
    size = 1 << int(np.ceil(np.log2(2 * height)))
    spectrum = np.fft.rfft(profiles, size, axis=1)
    correlation = (np.fft.irfft(spectrum * np.conj(spectrum), size, axis=1)[:, :height] / energy[:, None]).mean(axis=0)
    return _first_period(correlation[: min(82, height)], min_peak)


def _first_period(correlation: np.ndarray, min_peak: float) -> float | None:
    """The shortest-lag autocorrelation peak at least half as strong as the strongest one (staves also repeat
    at multiples of the staff space, and systems at their own period), refined to a fraction of a pixel."""
    lags = np.arange(4, len(correlation) - 1)
    local = lags[(correlation[lags] >= correlation[lags - 1]) & (correlation[lags] >= correlation[lags + 1])]
    peaks = local[correlation[local] >= min_peak]
    if len(peaks) == 0:
        return None
    lag = int(peaks[correlation[peaks] >= 0.5 * correlation[peaks].max()][0])
    # five lines a staff space apart correlate more at one space than at two: a weaker peak at half the lag
    # (blur and noise flatten it) is the staff space, the chosen one its double
    halves = local[(np.abs(local - lag / 2) <= 1.5) & (correlation[local] >= 0.3 * correlation[lag])]
    if len(halves):
        lag = int(halves[np.argmax(correlation[halves])])
    left, middle, right = correlation[lag - 1 : lag + 2]
    bend = left - 2 * middle + right
    return float(lag + (0.5 * (left - right) / bend if bend < 0 else 0.0))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis, stride ``tile - 2 * overlap``; the last tile ends at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - 2 * overlap))
    return [*starts, length - tile]


def _owned(centres: np.ndarray, starts: list[int], index: int, tile: int) -> np.ndarray:
    """Which centres (1-D) are nearest to this tile's centre among all tiles along the axis."""
    middles = np.asarray(starts, np.float32) + tile / 2
    nearest = np.abs(centres[:, None] - middles[None, :]).argmin(axis=1)
    return nearest == index


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 0.02:
        return image
    height, width = image.shape
    size = (max(round(width * scale), 16), max(round(height * scale), 16))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS if scale < 1
                                                    else Image.Resampling.BILINEAR))


def infer_page(run: RunTiles, image: np.ndarray, geometry: PageGeometry, known_staff_space: float | None = None,
               max_scale: float = 3.0) -> PageResult:
    """Detect every symbol on a (H, W) uint8 grayscale page; boxes come back in the page's own pixels.
    ``known_staff_space`` (pixels) skips the estimate, for stations whose camera never moves."""
    space = known_staff_space or estimate_staff_space(image)
    scale = float(np.clip(geometry.staff_space / space, 1 / max_scale, max_scale)) if space else 1.0
    scaled = rescale(image, scale)
    height, width = scaled.shape
    padded = np.full((max(height, geometry.tile), max(width, geometry.tile)), 255, np.uint8)
    padded[:height, :width] = scaled
    ys = tile_starts(padded.shape[0], geometry.tile, geometry.overlap)
    xs = tile_starts(padded.shape[1], geometry.tile, geometry.overlap)
    places = [(row, col) for row in range(len(ys)) for col in range(len(xs))]
    found: list[Detections] = []
    for first in range(0, len(places), geometry.batch):
        chunk = places[first : first + geometry.batch]
        tiles = np.stack([padded[ys[r] : ys[r] + geometry.tile, xs[c] : xs[c] + geometry.tile] for r, c in chunk])
        energy, classes, log_size = run((tiles.astype(np.float32) / 255.0)[:, None])
        for k, (row, col) in enumerate(chunk):
            tile = detect(energy[k], classes[k], log_size[k], geometry.energy_cut,
                          geometry.min_pixels).shifted(xs[col], ys[row])
            keep = (_owned(tile.centres[:, 0], xs, col, geometry.tile)
                    & _owned(tile.centres[:, 1], ys, row, geometry.tile)
                    & (tile.centres[:, 0] < width) & (tile.centres[:, 1] < height))
            found.append(tile.subset(keep))
    detections = Detections.concat(found)
    back = Detections(detections.boxes / scale, detections.labels, detections.scores, detections.centres / scale)
    return PageResult(back, space, scale, len(places))

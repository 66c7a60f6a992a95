"""A station's normal appearance: a PatchCore-style memory bank of cell descriptors from its good parts (numpy).

Every 8x8-pixel cell of a frame is described by a feature vector (``descriptors.cell_descriptors``:
derivatives along and across the tube's local axis, not the classifier's features, which describe
another renderer's defects as much like its normal structures as those are like each other).  A
station learns the features of its good parts: a PCA of the standardised features, fitted on the
first frames, keeps the main directions; each frame's cells are reduced to a coreset of their own
(greedy k-centre, as in PatchCore: the background's thousand similar cells become a few, a rare
structure keeps its own) and pooled, and a last k-centre selection keeps a small bank that still
covers everything seen.  Each bank entry has a radius, the distance to its few nearest pooled
cells: a tube's cut end or a border crossing varies from part to part far more than its lumen, and
without radii the most unusual good cell of a frame was always such a structure, and defects in the
quiet lumen scored below it.  A cell's novelty is its distance to a bank entry over that entry's
radius (the smallest such ratio), over the ratios seen on held-out good frames, so 1.0 is "as
unusual as the most unusual good cell the station showed", whatever the features' scale.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StationSettings:
    """How much a station learns and keeps."""

    frames: int = 100  # good frames learned from (the issue allows at most 200)
    components: int = 32  # PCA dimensions kept
    bank_size: int = 1024  # coreset entries kept
    frame_keep: int = 256  # each frame's cells are first reduced to this many (a coreset of the frame)
    holdout_every: int = 5  # every n-th learned frame calibrates novelty instead of filling the bank
    neighbours: int = 3  # an entry's radius: the distance to its n-th nearest pooled cell
    radius_floor: float = 0.2  # radii below this quantile of all radii are raised to it (noise in the lumen)
    seed: int = 0


def greedy_coreset(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``size`` points chosen by greedy k-centre: each pick is the point furthest from the picks."""
    if len(points) <= size:
        return np.arange(len(points))
    picks = np.empty(size, dtype=np.int64)
    picks[0] = int(rng.integers(len(points)))
    nearest = np.sum((points - points[picks[0]]) ** 2, axis=1)
    for k in range(1, size):
        picks[k] = int(np.argmax(nearest))
        np.minimum(nearest, np.sum((points - points[picks[k]]) ** 2, axis=1), out=nearest)
    return picks


@dataclass
class StationNormal:
    """A learned station: PCA, coreset bank with radii, and the novelty scale from held-out good frames."""

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (C, d)
    bank: np.ndarray  # (M, d)
    radius: np.ndarray  # (M,) each entry's radius
    scale: float  # smallest distance-over-radius of the most unusual held-out good cell
    frames: int
    learned: int = -1  # bank entries from learning; those after them came from operators' feedback
    bank_sq: np.ndarray = field(init=False, repr=False)
    inverse: np.ndarray = field(init=False, repr=False)  # 1 / radius^2
    weights: np.ndarray = field(init=False, repr=False)  # (d + 2, M): the search as one matrix product

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.components = np.ascontiguousarray(self.components, dtype=np.float32)
        if self.learned < 0:
            self.learned = len(self.bank)
        self._set_bank(np.asarray(self.bank, dtype=np.float32), np.asarray(self.radius, dtype=np.float32))

    def _set_bank(self, bank: np.ndarray, radius: np.ndarray) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.radius = np.ascontiguousarray(radius, dtype=np.float32)
        self.bank_sq = np.sum(self.bank**2, axis=1)
        self.inverse = (1.0 / np.maximum(self.radius, 1e-6) ** 2).astype(np.float32)
        # |p - b|^2 / r^2 = [p, |p|^2, 1] . [-2 b / r^2, 1 / r^2, |b|^2 / r^2]: one product, then the minimum
        self.weights = np.ascontiguousarray(np.vstack([-2.0 * self.bank.T * self.inverse, self.inverse,
                                                       self.bank_sq * self.inverse]), dtype=np.float32)

    def project(self, cells: np.ndarray) -> np.ndarray:
        return (cells - self.mean) @ self.components

    def distances(self, cells: np.ndarray) -> np.ndarray:
        """Smallest distance-over-radius to a bank entry of every (cells, C) feature."""
        points = self.project(cells).astype(np.float32, copy=False)
        augmented = np.empty((len(points), points.shape[1] + 2), dtype=np.float32)
        augmented[:, :-2] = points
        augmented[:, -2] = np.einsum("ij,ij->i", points, points)
        augmented[:, -1] = 1.0
        return np.sqrt(np.maximum((augmented @ self.weights).min(axis=1), 0.0))

    def extend(self, points: np.ndarray, limit: int = 4096) -> None:
        """Add projected points (an operator's false reject) to the bank; past ``limit`` the oldest added go.

        An added entry gets the learned entries' median radius: one part says nothing of its spread.
        """
        points = np.asarray(points, dtype=np.float32)
        bank = np.concatenate([self.bank, points])
        radius = np.concatenate([self.radius, np.full(len(points), np.median(self.radius[: self.learned]))])
        if len(bank) > limit:
            keep = np.r_[: self.learned, len(bank) - (limit - self.learned) : len(bank)]
            bank, radius = bank[keep], radius[keep]
        self._set_bank(bank, radius)

    def novelty(self, cells: np.ndarray) -> np.ndarray:
        """Distance over the station's scale: about 1.0 for its most unusual good cell."""
        return self.distances(cells) / self.scale

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, mean=self.mean, components=self.components, bank=self.bank.astype(np.float16),
                            radius=self.radius, scale=np.float64(self.scale), frames=np.int64(self.frames),
                            learned=np.int64(self.learned))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> StationNormal:
        with np.load(io.BytesIO(data)) as saved:
            return cls(saved["mean"], saved["components"], saved["bank"].astype(np.float32), saved["radius"],
                       float(saved["scale"]),
                       int(saved["frames"]), int(saved["learned"]))


class StationLearner:
    """Collects a station's good frames (one (cells, C) array each) and builds its :class:`StationNormal`."""

    def __init__(self, settings: StationSettings = StationSettings()) -> None:
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)
        self.first: list[np.ndarray] = []
        self.held_out: list[np.ndarray] = []
        self.pool: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self.frames = 0

    @property
    def ready(self) -> bool:
        return self.frames >= self.settings.frames

    def add(self, cells: np.ndarray) -> None:
        """Take one good frame's cell features."""
        self.frames += 1
        if self.frames % self.settings.holdout_every == 0:
            self.held_out.append(cells.astype(np.float16))
            return
        if self.components is None:
            self.first.append(cells)
            if len(self.first) >= 8:
                self._fit_projection()
            return
        self._pool(cells)

    def _fit_projection(self) -> None:
        stacked = np.concatenate(self.first)
        self.mean = stacked.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = stacked - self.mean
        # Standardised first: a faint response along the axis must weigh as much as the strong edges across it.
        spread = centred.std(axis=0) + 1e-6
        standard = centred / spread
        _, vectors = np.linalg.eigh(standard.T @ standard)  # the correlation's eigenvectors: a C x C problem
        kept = vectors[:, ::-1][:, : self.settings.components] / spread[:, None]
        self.components = np.ascontiguousarray(kept, dtype=np.float32)
        first, self.first = self.first, []
        for cells in first:
            self._pool(cells)

    def _pool(self, cells: np.ndarray) -> None:
        assert self.mean is not None and self.components is not None
        points = ((cells - self.mean) @ self.components).astype(np.float32)
        points = points[greedy_coreset(points, self.settings.frame_keep, self.rng)]
        self.pool = points if self.pool is None else np.concatenate([self.pool, points])

    def build(self, bank_size: int | None = None) -> StationNormal:
        """The learned station; novelty is scaled so the held-out good frames' worst cell scores 1.0."""
        if self.components is None:
            self._fit_projection()
        assert self.pool is not None and self.mean is not None and self.components is not None
        bank = self.pool[greedy_coreset(self.pool, bank_size or self.settings.bank_size, self.rng)]
        station = StationNormal(self.mean, self.components, bank, self.radii(bank), 1.0, self.frames)
        held = [station.distances(cells.astype(np.float32)).max() for cells in self.held_out]
        station.scale = float(max(held)) if held else 1.0
        return station


    def radii(self, bank: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Each entry's distance to its n-th nearest pooled cell, floored (a dense lumen must not amplify noise)."""
        assert self.pool is not None
        k = min(self.settings.neighbours, len(self.pool) - 1)
        pool_sq = np.sum(self.pool**2, axis=1)
        radius = np.empty(len(bank), dtype=np.float32)
        for start in range(0, len(bank), chunk):  # (chunk, pool) at a time: the pool holds up to ~50,000 cells
            part = bank[start : start + chunk]
            squared = np.sum(part**2, axis=1)[:, None] - 2 * part @ self.pool.T + pool_sq
            radius[start : start + chunk] = np.sqrt(np.maximum(np.partition(squared, k, axis=1)[:, k], 0.0))
        return np.maximum(radius, np.quantile(radius, self.settings.radius_floor))


@dataclass(frozen=True)
class Gate:
    """How a station's novelty tempers the defect classifier (see the model card, "Station normal").

    A cell counts as defective in proportion to how unusual it is for the station: not at all below
    ``floor`` (as usual as the station's good cells), fully from ``full`` on.  A cell more unusual than
    ``reject`` rejects the part whatever the classifier says (a defect of a kind it never learnt).
    """

    floor: float = 0.25
    full: float = 0.75
    reject: float = 2.0

    def combine(self, heat: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """Per-cell defect score: the classifier's probability times the station's novelty weight."""
        weight = np.clip((novelty - self.floor) / (self.full - self.floor), 0.0, 1.0)
        return (heat * weight).astype(np.float32)

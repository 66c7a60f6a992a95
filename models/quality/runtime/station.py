"""A station's normal appearance: a PatchCore-style memory bank of cell features from its own good parts (numpy only).

The tile network's backbone describes every 8x8-pixel cell of a frame by a feature vector.  A
station learns the features of its good parts: a PCA fitted on the first frames keeps the main
directions, each frame's cells are reduced to a coreset of their own (greedy k-centre, as in
PatchCore: the background's thousand similar cells become a few, a rare structure keeps its own)
and pooled, and a last k-centre selection keeps a small bank that still covers everything seen.  A cell's novelty is its
distance to the nearest bank entry over the distances seen on held-out good frames, so 1.0 is
"as unusual as the most unusual good cell the station showed", whatever the features' scale.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from models.quality.runtime.tiling import TileGeometry


@dataclass(frozen=True)
class StationSettings:
    """How much a station learns and keeps."""

    frames: int = 100  # good frames learned from (the issue allows at most 200)
    components: int = 32  # PCA dimensions kept
    bank_size: int = 1024  # coreset entries kept
    frame_keep: int = 256  # each frame's cells are first reduced to this many (a coreset of the frame)
    holdout_every: int = 5  # every n-th learned frame calibrates novelty instead of filling the bank
    seed: int = 0


def cell_owners(geometry: TileGeometry, ys: np.ndarray, xs: np.ndarray,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every heat-map cell (row-major), the tile that holds it furthest from its border, and where.

    Cells near a tile's border see the network's zero padding; taking each cell from the tile in
    which it is most central keeps one feature per cell and keeps padding out of the picture.
    """
    grid_h = -(-max(shape[0], geometry.tile) // geometry.cell)
    grid_w = -(-max(shape[1], geometry.tile) // geometry.cell)
    cells_per_tile = geometry.tile // geometry.cell
    centre = (cells_per_tile - 1) / 2
    best = np.full((grid_h, grid_w), np.inf)
    owner = np.zeros((3, grid_h, grid_w), dtype=np.int64)
    offsets = np.arange(cells_per_tile)
    for index, (y, x) in enumerate(zip(ys // geometry.cell, xs // geometry.cell, strict=True)):
        rows, cols = y + offsets, x + offsets
        keep_r, keep_c = rows < grid_h, cols < grid_w
        r, c = np.meshgrid(offsets[keep_r], offsets[keep_c], indexing="ij")
        distance = np.maximum(np.abs(r - centre), np.abs(c - centre))
        view = best[y + r, x + c]
        better = distance < view
        best[(y + r)[better], (x + c)[better]] = distance[better]
        owner[:, (y + r)[better], (x + c)[better]] = np.stack([np.full(better.sum(), index), r[better], c[better]])
    return owner[0].ravel(), owner[1].ravel(), owner[2].ravel()


def frame_cells(features: np.ndarray, owners: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(tiles, C, g, g) features -> (cells, C): one feature per heat-map cell."""
    tile, row, col = owners
    return np.ascontiguousarray(features[tile, :, row, col], dtype=np.float32)


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
    """A learned station: PCA, coreset bank and the novelty scale from held-out good frames."""

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (C, d)
    bank: np.ndarray  # (M, d)
    scale: float  # nearest-bank distance of the most unusual held-out good cell
    frames: int
    learned: int = -1  # bank entries from learning; those after them came from operators' feedback
    bank_sq: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.components = np.ascontiguousarray(self.components, dtype=np.float32)
        self.bank = np.ascontiguousarray(self.bank, dtype=np.float32)
        self.bank_sq = np.sum(self.bank**2, axis=1)
        if self.learned < 0:
            self.learned = len(self.bank)

    def project(self, cells: np.ndarray) -> np.ndarray:
        return (cells - self.mean) @ self.components

    def distances(self, cells: np.ndarray) -> np.ndarray:
        """Nearest-bank Euclidean distance of every (cells, C) feature."""
        points = self.project(cells).astype(np.float32, copy=False)
        cross = points @ self.bank.T  # |p - b|^2 = |p|^2 - 2 p.b + |b|^2, in place: the (cells, bank) array is big
        cross *= -2.0
        cross += self.bank_sq
        nearest = cross.min(axis=1)
        nearest += np.einsum("ij,ij->i", points, points)
        return np.sqrt(np.maximum(nearest, 0.0))

    def extend(self, points: np.ndarray, limit: int = 4096) -> None:
        """Add projected points (an operator's false reject) to the bank; past ``limit`` the oldest added go."""
        bank = np.concatenate([self.bank, np.asarray(points, dtype=np.float32)])
        if len(bank) > limit:
            bank = np.concatenate([bank[: self.learned], bank[self.learned :][len(bank) - limit :]])
        self.bank = np.ascontiguousarray(bank)
        self.bank_sq = np.sum(self.bank**2, axis=1)

    def novelty(self, cells: np.ndarray) -> np.ndarray:
        """Distance over the station's scale: about 1.0 for its most unusual good cell."""
        return self.distances(cells) / self.scale

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, mean=self.mean, components=self.components, bank=self.bank.astype(np.float16),
                            scale=np.float64(self.scale), frames=np.int64(self.frames),
                            learned=np.int64(self.learned))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> StationNormal:
        with np.load(io.BytesIO(data)) as saved:
            return cls(saved["mean"], saved["components"], saved["bank"].astype(np.float32), float(saved["scale"]),
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
        _, vectors = np.linalg.eigh(centred.T @ centred)  # the covariance's eigenvectors: a C x C problem
        self.components = np.ascontiguousarray(vectors[:, ::-1][:, : self.settings.components], dtype=np.float32)
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
        station = StationNormal(self.mean, self.components, bank, 1.0, self.frames)
        held = [station.distances(cells.astype(np.float32)).max() for cells in self.held_out]
        station.scale = float(max(held)) if held else 1.0
        return station


@dataclass(frozen=True)
class Gate:
    """How a station's novelty tempers the defect classifier (see the model card, "Station normal").

    A cell counts as defective in proportion to how unusual it is for the station: not at all below
    ``floor`` (as usual as the station's good cells), fully from ``full`` on.  A cell more unusual than
    ``reject`` rejects the part whatever the classifier says (a defect of a kind it never learnt).
    """

    floor: float = 0.5
    full: float = 1.0
    reject: float = 2.0

    def combine(self, heat: np.ndarray, novelty: np.ndarray) -> np.ndarray:
        """Per-cell defect score: the classifier's probability times the station's novelty weight."""
        weight = np.clip((novelty - self.floor) / (self.full - self.floor), 0.0, 1.0)
        return (heat * weight).astype(np.float32)

"""Tiled inference geometry shared by training, evaluation and the agent (numpy only).

A frame is cut into overlapping square tiles; the network returns, per tile, a grid of
defect probabilities (one cell per ``cell`` pixels).  The frame score is the maximum over
all tiles (max aggregation), and the per-tile grids are stitched into a frame heat map
whose peak locates the defect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: runs a (N, 1, T, T) tile batch through the model: (tile probabilities (N,), cell probabilities (N, g, g)),
#: optionally followed by the cell features (N, C, g, g) a station's normal model needs
RunTiles = Callable[[np.ndarray], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class TileGeometry:
    """Tile size, stride, heat-map cell size and intensity normalisation."""

    tile: int = 64
    stride: int = 56
    cell: int = 8
    mean: float = 0.5
    std: float = 0.25

    def starts(self, length: int) -> list[int]:
        """Tile start offsets along one axis; the last tile ends at the border (no padding needed)."""
        if length <= self.tile:
            return [0]
        starts = list(range(0, length - self.tile, self.stride))
        return [*starts, length - self.tile]

    def grid(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) start of every tile, row-major."""
        ys, xs = np.meshgrid(self.starts(height), self.starts(width), indexing="ij")
        return ys.ravel(), xs.ravel()

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """uint8 grayscale -> float32 network input scale."""
        return ((image.astype(np.float32) / 255.0) - self.mean) / self.std

    def tiles(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut a (H, W) uint8 frame into a (N, 1, tile, tile) float32 batch plus tile starts."""
        image = pad_to(image, self.tile)
        ys, xs = self.grid(*image.shape)
        windows = np.lib.stride_tricks.sliding_window_view(image, (self.tile, self.tile))
        batch = self.normalise(windows[ys, xs])
        return batch[:, None], ys, xs

    def heatmap(self, cells: np.ndarray, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Stitch per-tile cell grids (N, c, c) into a frame heat map, max where tiles overlap."""
        height, width = max(shape[0], self.tile), max(shape[1], self.tile)
        heat = np.zeros((-(-height // self.cell), -(-width // self.cell)), dtype=np.float32)
        offsets = np.arange(cells.shape[-1])
        rows = (ys // self.cell)[:, None, None] + offsets[None, :, None]
        cols = (xs // self.cell)[:, None, None] + offsets[None, None, :]
        rows, cols = np.broadcast_arrays(rows, cols)
        inside = (rows < heat.shape[0]) & (cols < heat.shape[1])
        np.maximum.at(heat, (rows[inside], cols[inside]), cells[inside])
        return heat

    def peak_and_box(self, heat: np.ndarray, level: float) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """Heat-map peak (x, y pixel centre) and the pixel box of cells above ``level`` connected to it."""
        from scipy import ndimage

        py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
        labels, _ = ndimage.label(heat >= min(level, float(heat[py, px])))
        rows, cols = np.nonzero(labels == labels[py, px])
        c = self.cell
        box = (int(cols.min()) * c, int(rows.min()) * c, (int(cols.max()) + 1) * c, (int(rows.max()) + 1) * c)
        return (int(px) * c + c // 2, int(py) * c + c // 2), box


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Pad a frame smaller than one tile with its edge values."""
    pad_y, pad_x = max(size - image.shape[0], 0), max(size - image.shape[1], 0)
    if pad_y or pad_x:
        return np.pad(image, ((0, pad_y), (0, pad_x)), mode="edge")
    return image


def infer(run: RunTiles, image: np.ndarray, geometry: TileGeometry, batch: int = 128) -> Inference:
    """Tiled inference on one grayscale frame: frame score (max over tiles), heat map, tile scores."""
    tiles, ys, xs = geometry.tiles(image)
    scores, grids, features = [], [], []
    for start in range(0, len(tiles), batch):
        tile_prob, cell_prob, *rest = run(tiles[start : start + batch])
        scores.append(tile_prob.reshape(-1))
        grids.append(cell_prob)
        features.extend(rest[:1])
    tile_scores = np.concatenate(scores)
    heat = geometry.heatmap(np.concatenate(grids), ys, xs, image.shape[:2])
    return Inference(float(tile_scores.max()), heat, tile_scores, ys, xs,
                     np.concatenate(features) if features else None)


@dataclass(frozen=True)
class Inference:
    """What tiled inference found on one frame."""

    score: float
    heat: np.ndarray
    tile_scores: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    features: np.ndarray | None = None  # (tiles, C, g, g) when the model gives cell features

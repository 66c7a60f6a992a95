"""Defect cropping: a bank of rendered training frames and a sampler of augmented tile crops.

Positive crops are cut around the labeller's painted defect pixels (anywhere inside the
crop, not only centred); negative crops come from parts labelled good, half of them
centred on busy pixels (tube walls, lumen, highlights, dust) where false rejects arise.
A further share of negatives is cut around the dust specks the generator reports (known
hard negatives, as a team would collect them from false rejects).  The sampler draws a
fixed share of positives per batch (resampling against the 2-5% defect rate).
Labels are the human ones, label noise included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from models.quality.runtime.tiling import TileGeometry
from sensors.simulate.parts import Part


@dataclass
class CropBank:
    """Rendered frames with their annotations and candidate crop centres."""

    images: np.ndarray  # (F, H, W) uint8
    annotations: np.ndarray  # (F, H, W) bool
    positive: list[np.ndarray]  # per frame: (k, 2) annotated pixels; empty for good frames
    busy: list[np.ndarray]  # per frame: (k, 2) high-local-contrast pixels
    hard: list[np.ndarray]  # per frame: (k, 2) known look-alikes (dust on the backlight)

    @property
    def bad_frames(self) -> np.ndarray:
        return np.flatnonzero([len(p) > 0 for p in self.positive])

    @property
    def good_frames(self) -> np.ndarray:
        return np.flatnonzero([len(p) == 0 for p in self.positive])


def busy_pixels(image: np.ndarray, share: float = 0.08) -> np.ndarray:
    """The pixels with the highest local contrast (a cheap proxy for 'on the part')."""
    smooth = ndimage.uniform_filter(image.astype(np.float32), 7)
    detail = np.abs(image.astype(np.float32) - smooth)
    level = np.quantile(detail, 1 - share)
    points = np.argwhere(detail >= level)
    return points[:: max(len(points) // 2000, 1)]


def build_bank(parts: Iterable[Part]) -> CropBank:
    """Collect rendered parts into a bank (labels and painted regions as the labeller gave them)."""
    images, annotations, positive, busy, hard = [], [], [], [], []
    for part in parts:
        annotation = part.annotation if part.annotation is not None else part.mask
        images.append(part.image)
        annotations.append(annotation)
        positive.append(np.argwhere(annotation) if part.label else np.zeros((0, 2), dtype=np.int64))
        busy.append(busy_pixels(part.image))
        hard.append(np.array(part.nuisances, dtype=np.int64).reshape(-1, 2))
    return CropBank(np.stack(images), np.stack(annotations), positive, busy, hard)


class CropSampler:
    """Draws augmented (crop, tile label, cell labels) batches from a bank."""

    def __init__(self, bank: CropBank, geometry: TileGeometry, positive_fraction: float, seed: int,
                 hard_fraction: float = 0.0) -> None:
        self.bank = bank
        self.hard_fraction = hard_fraction
        self.geometry = geometry
        self.positive_fraction = positive_fraction
        self.rng = np.random.default_rng(seed)
        self.bad, self.good = bank.bad_frames, bank.good_frames

    def crop_at(self, frame: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        """The tile-sized crop containing pixel (y, x) at a random position, and its annotation."""
        size = self.geometry.tile
        margin = self.geometry.cell
        height, width = self.bank.images.shape[1:]
        top = int(np.clip(y - self.rng.integers(margin, size - margin), 0, height - size))
        left = int(np.clip(x - self.rng.integers(margin, size - margin), 0, width - size))
        rows, cols = slice(top, top + size), slice(left, left + size)
        return self.bank.images[frame, rows, cols], self.bank.annotations[frame, rows, cols]

    def draw(self, positive: bool) -> tuple[np.ndarray, np.ndarray]:
        if positive:
            frame = int(self.rng.choice(self.bad))
            y, x = self.bank.positive[frame][self.rng.integers(len(self.bank.positive[frame]))]
            return self.crop_at(frame, int(y), int(x))
        frame = int(self.rng.choice(self.good))
        choice = self.rng.random()
        if choice < self.hard_fraction and len(self.bank.hard[frame]):
            y, x = self.bank.hard[frame][self.rng.integers(len(self.bank.hard[frame]))]
        elif choice < 0.5:
            y, x = self.bank.busy[frame][self.rng.integers(len(self.bank.busy[frame]))]
        else:
            y, x = self.rng.integers(self.bank.images.shape[1]), self.rng.integers(self.bank.images.shape[2])
        return self.crop_at(frame, int(y), int(x))

    def batch(self, size: int, augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crops (B, 1, T, T) float32, tile labels (B,), cell labels (B, g, g)) as float32."""
        n_pos = round(size * self.positive_fraction)
        crops, annotations = zip(*(self.draw(i < n_pos) for i in range(size)), strict=True)
        x = self.geometry.normalise(np.stack(crops))
        cells = cell_labels(np.stack(annotations), self.geometry.cell)
        if augment:
            x, cells = self.augment(x, cells)
        tile = cells.reshape(size, -1).max(axis=1)
        return x[:, None].astype(np.float32), tile.astype(np.float32), cells.astype(np.float32)

    def augment(self, x: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flips, gain and offset (lighting), extra sensor noise."""
        n = len(x)
        flip_y, flip_x = self.rng.random(n) < 0.5, self.rng.random(n) < 0.5
        x[flip_y], cells[flip_y] = x[flip_y, ::-1], cells[flip_y, ::-1]
        x[flip_x], cells[flip_x] = x[flip_x, :, ::-1], cells[flip_x, :, ::-1]
        gain = self.rng.uniform(0.85, 1.15, (n, 1, 1)).astype(np.float32)
        offset = self.rng.uniform(-0.3, 0.3, (n, 1, 1)).astype(np.float32)
        noise = self.rng.standard_normal(x.shape, dtype=np.float32) * self.rng.uniform(0, 0.06, (n, 1, 1))
        return (x * gain + offset + noise.astype(np.float32)), cells


def cell_labels(annotations: np.ndarray, cell: int) -> np.ndarray:
    """(B, T, T) painted pixels -> (B, T/cell, T/cell): a cell is defective if any pixel is."""
    b, t, _ = annotations.shape
    g = t // cell
    return np.asarray(annotations.reshape(b, g, cell, g, cell).any(axis=(2, 4)))

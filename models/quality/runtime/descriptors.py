"""Renderer-agnostic, hand-made descriptors of every 8x8-pixel cell of a grey frame for station normals (numpy).

A station's memory bank needs features that describe any tube, not only the renderer the
classifier was trained on.  A tube is locally one-dimensional: along its axis its edges, walls and
lumen barely change, across it they change a lot.  Defects (spots, bubbles, scratches, kinks) break
that symmetry.  So each cell is described, at two scales (2 and 4 px), by the image's first and
second derivatives *along* the local axis (near zero on a good tube, whatever its pose) and its
gradient *across* it, the axis taken from the large-scale structure tensor (16 px and more, so a
small defect does not turn it); plus the smoothed brightness and gradient strength at 8 and 16 px
as context (lumen, wall, background: a ring's arc in the lumen must not pass for the wall's edge).
Measuring along and across the local axis makes the description independent of the part's pose
(up to 30 degrees on a line), which a bank of plain patches would have to learn angle by angle.
Tried and dropped on two stations of the independent renderer (40-100 good frames): plain
multi-scale patches (ROC AUC of the frame's novelty 0.53-0.71), the same patches turned to the
local axis (0.57-0.59), rotation-invariant Hessian and gradient jets (0.54-0.77); full resolution
added 30 ms and no separation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: pixels per side of a heat-map cell (the tile network's cell)
CELL = 8
#: names the descriptor: a station learned on another kind of descriptor must be relearned
KIND = "axis-jet-v1"
#: pooling factors of the fine scales (2 and 4 px); full resolution added cost but no separation
LEVELS = (2, 4)
#: values per cell: brightness and gradient at 8 and 16 px, then mean and largest magnitude of 3 responses a level
SIZE = 4 + 6 * len(LEVELS)


def normalise(image: np.ndarray) -> np.ndarray:
    """Grey frame -> float32 around its median, in units of its 1-99 % range (exposure changes per part)."""
    x = image.astype(np.float32)
    low, median, high = np.percentile(x[::4, ::4], [1, 50, 99])
    return (x - np.float32(median)) / np.float32(max(high - low, 8.0))


def halve(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    """Combine each 2 x 2 block with ``op`` (strided views: reshaping and reducing tiny axes is slower)."""
    return op(op(x[0::2, 0::2], x[1::2, 0::2]), op(x[0::2, 1::2], x[1::2, 1::2]))


def pool(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks (k a power of two; dimensions are multiples of k)."""
    while k > 1:
        x, k = halve(x, np.add) * np.float32(0.25), k // 2
    return x


def per_cell(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) map with n x n pixels a cell (n a power of two) -> each cell's mean and largest magnitude."""
    return pool(values, n), pool_max(np.abs(values), n)


def pool_max(x: np.ndarray, k: int) -> np.ndarray:
    """Largest value over k x k blocks."""
    while k > 1:
        x, k = halve(x, np.maximum), k // 2
    return x


def axis_direction(x: np.ndarray) -> np.ndarray:
    """Per cell, the gradient direction (radians) of the structure at 16 px and more: across the tube's axis."""
    p = ndimage.gaussian_filter(pool(x, 4), 1.0)
    gy, gx = np.gradient(p)
    jxx, jyy, jxy = (ndimage.gaussian_filter(v, 4.0) for v in (gx * gx, gy * gy, gx * gy))
    return (0.5 * np.arctan2(2 * jxy, jxx - jyy))[1::2, 1::2]  # every other /4 pixel: one per 8 px cell


def padded(image: np.ndarray) -> np.ndarray:
    """Pad with edge values to at least one 64 px tile and to whole cells, as the heat map's grid counts them."""
    h, w = image.shape[:2]
    height = -(-max(h, 64) // CELL) * CELL
    width = -(-max(w, 64) // CELL) * CELL
    if (height, width) == (h, w):
        return image
    return np.pad(image, ((0, height - h), (0, width - w)), mode="edge")


def cell_descriptors(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey frame -> (cells, SIZE) float32, one row per heat-map cell, row-major."""
    x = normalise(padded(image))
    theta = axis_direction(x).astype(np.float32)
    cells = pool(x, CELL)
    columns = []
    for sigma in (1.0, 2.0):  # 8 and 16 px
        context = ndimage.gaussian_filter(cells, sigma)
        gy8, gx8 = np.gradient(context)
        columns += [context, np.hypot(gx8, gy8)]
    for k in LEVELS:
        p = ndimage.gaussian_filter(pool(x, k), 1.0)
        gy, gx = np.gradient(p)
        gyy, gyx = np.gradient(gy)
        gxy, gxx = np.gradient(gx)
        n = CELL // k
        c, s = (np.repeat(np.repeat(f(theta), n, axis=0), n, axis=1) for f in (np.cos, np.sin))
        # (c, s) points across the axis, (-s, c) along it
        along = -s * gx + c * gy
        across = c * gx + s * gy
        bend = s * s * gxx - s * c * (gxy + gyx) + c * c * gyy  # second derivative along the axis
        for values, scale in ((along, k), (bend, k * k), (across, k)):  # scale-normalised derivatives
            columns.extend(per_cell(values * scale, n))
    return np.stack(columns, axis=-1).reshape(-1, SIZE).astype(np.float32)

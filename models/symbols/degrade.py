"""Making clean engravings look like phone photos and scans: geometry, light, blur, noise, JPEG (boxes follow)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def warp(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
         max_degrees: float = 2.5, max_shear: float = 0.02, scale: tuple[float, float] = (0.85, 1.15),
         ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate, shear and scale about the centre (a page not quite flat or square to the camera); boxes become
    the bounding boxes of their moved corners."""
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    zoom = rng.uniform(*scale)
    shear = rng.uniform(-max_shear, max_shear)
    forward = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[1.0, shear], [0.0, 1.0]])
    centre = np.array(image.shape[::-1], dtype=np.float64) / 2  # (x, y)
    inverse = np.linalg.inv(forward)
    # ndimage works in (row, col): out[o] = in[M o + offset]
    matrix = inverse[::-1, ::-1]
    offset = centre[::-1] - matrix @ centre[::-1]
    moved = ndimage.affine_transform(image.astype(np.float32), matrix, offset, order=1, cval=255.0,
                                     mode="constant")
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
    placed = (corners - centre) @ forward.T + centre
    new_boxes = np.concatenate([placed.min(axis=1), placed.max(axis=1)], axis=1).astype(np.float32)
    return np.clip(moved, 0, 255).astype(np.uint8), new_boxes


def light_and_noise(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Uneven light (a smooth gradient and a soft shadow), paper tint, contrast loss, blur and sensor noise."""
    height, width = image.shape
    pixels = image.astype(np.float32) / 255.0
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * cols / width + np.sin(direction) * rows / height)
    light = 1.0 - strength * rng.uniform(0.0, 0.35) * (ramp - ramp.min())
    cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.3, 1.0) * max(width, height)
    shadow = np.exp(-(((cols - cx) ** 2 + (rows - cy) ** 2) / radius**2))
    light -= strength * rng.uniform(0.0, 0.25) * shadow
    paper, ink = rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.25 * strength)
    pixels = (ink + (paper - ink) * pixels) * light
    sigma = rng.uniform(0.0, 1.1 * strength)
    if sigma > 0.2:
        pixels = ndimage.gaussian_filter(pixels, sigma)
    pixels += rng.normal(0.0, rng.uniform(0.0, 0.05 * strength), pixels.shape).astype(np.float32)
    return np.clip(pixels * 255.0, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = (35, 90)) -> np.ndarray:
    """A JPEG round trip at a random quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(*quality)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def on_desk(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, margin: float = 0.08
            ) -> tuple[np.ndarray, np.ndarray]:
    """The page lying on a darker, textured surface with a random margin around it (a phone photo's frame)."""
    height, width = image.shape
    top, left = (int(rng.uniform(0.01, margin) * s) for s in (height, width))
    bottom, right = (int(rng.uniform(0.01, margin) * s) for s in (height, width))
    desk = rng.uniform(60, 160) + rng.normal(0, 12, (height + top + bottom, width + left + right))
    desk[top : top + height, left : left + width] = image
    return np.clip(desk, 0, 255).astype(np.uint8), boxes + np.array([left, top, left, top], np.float32)


def degrade(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
            strength: float = 1.0, desk: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The whole chain: (a desk around the page,) geometry, light and noise, JPEG."""
    if desk:
        image, boxes = on_desk(image, boxes, rng)
    image, boxes = warp(image, boxes, rng, max_degrees=2.5 * strength, max_shear=0.02 * strength)
    return jpeg(light_and_noise(image, rng, strength), rng), boxes

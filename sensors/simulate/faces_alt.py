"""An independent face generator for evaluation only: per-pixel height fields shaded by a Lambertian light."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# Written without looking at faces.py's drawing code; only the group names and the API are shared, so a model
# trained on faces.py can be scored per group here.  Groups differ in albedo, head shape and hair cover.
GROUP_ALBEDO = {
    "light": ((0.86, 0.70, 0.60), (0.95, 0.80, 0.70)),
    "medium": ((0.72, 0.52, 0.38), (0.84, 0.64, 0.48)),
    "olive": ((0.60, 0.48, 0.34), (0.72, 0.58, 0.42)),
    "dark": ((0.30, 0.20, 0.14), (0.48, 0.34, 0.24)),
}
GROUPS: tuple[str, ...] = tuple(GROUP_ALBEDO)
Box = tuple[float, float, float, float]
HAIR_COLOURS = ((0.08, 0.06, 0.05), (0.25, 0.16, 0.08), (0.55, 0.40, 0.20), (0.75, 0.65, 0.40), (0.5, 0.2, 0.1))
HAIR_BY_GROUP = {"light": (0.15, 0.3, 0.25, 0.2, 0.1), "medium": (0.5, 0.4, 0.1, 0.0, 0.0),
                 "olive": (0.7, 0.25, 0.05, 0.0, 0.0), "dark": (0.85, 0.15, 0.0, 0.0, 0.0)}


@dataclass(frozen=True)
class AltIdentity:
    """A person as shape bumps and albedo; lengths are fractions of the crop (centre 0, edges +-1)."""

    group: str
    index: int
    head_rx: float
    head_ry: float
    chin_power: float  # superellipse exponent of the lower head: 2 round, lower pointed
    albedo: tuple[float, float, float]
    eye_dx: float
    eye_y: float
    eye_radius: float
    iris: tuple[float, float, float]
    brow_height: float
    brow_weight: float
    nose_height: float
    nose_length: float
    nose_y: float
    mouth_width: float
    mouth_y: float
    lip_tone: float
    cheek_height: float
    hair_colour: tuple[float, float, float]
    hairline: float
    hair_sides: float


def _draw(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def sample_identities(count: int, seed: int, groups: tuple[str, ...] = GROUPS) -> list[AltIdentity]:
    """``count`` people, group by group in turn, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    people = []
    for index in range(count):
        group = groups[index % len(groups)]
        low, high = (np.array(v) for v in GROUP_ALBEDO[group])
        hair = np.array(HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_BY_GROUP[group])])
        people.append(AltIdentity(
            group=group, index=index, head_rx=_draw(rng, 0.5, 0.66), head_ry=_draw(rng, 0.68, 0.84),
            chin_power=_draw(rng, 1.4, 2.6), albedo=_rgb(low + (high - low) * rng.random()),
            eye_dx=_draw(rng, 0.22, 0.36), eye_y=_draw(rng, -0.18, -0.04), eye_radius=_draw(rng, 0.06, 0.1),
            iris=_rgb(rng.uniform(0.05, 0.5, 3)),
            brow_height=_draw(rng, 0.1, 0.2), brow_weight=_draw(rng, 0.02, 0.06),
            nose_height=_draw(rng, 0.08, 0.25), nose_length=_draw(rng, 0.12, 0.3), nose_y=_draw(rng, 0.08, 0.22),
            mouth_width=_draw(rng, 0.16, 0.32), mouth_y=_draw(rng, 0.3, 0.45), lip_tone=_draw(rng, 0.4, 0.8),
            cheek_height=_draw(rng, 0.0, 0.15), hair_colour=_rgb(hair * rng.uniform(0.8, 1.2)),
            hairline=_draw(rng, -0.62, -0.38), hair_sides=_draw(rng, 0.0, 1.0),
        ))
    return people


def _height_field(p: AltIdentity, x: np.ndarray, y: np.ndarray, smile: float) -> tuple[np.ndarray, np.ndarray]:
    """Surface height over the (x, y) grid and the head's coverage (1 inside the head)."""
    power = np.where(y > 0, p.chin_power, 2.0)
    radius = np.abs(x / p.head_rx) ** power + np.abs(y / p.head_ry) ** power
    inside = radius < 1
    dome = np.sqrt(np.clip(1 - radius, 0, 1)) * 0.6

    def bump(cx: float, cy: float, sx: float, sy: float, height: float) -> np.ndarray:
        return height * np.exp(-((x - cx) / sx) ** 2 - ((y - cy) / sy) ** 2)

    nose = bump(0, p.nose_y - p.nose_length / 2, 0.06, p.nose_length, p.nose_height)
    cheeks = sum(bump(s * (p.eye_dx + 0.05), p.nose_y + 0.05 - 0.04 * smile, 0.12, 0.1, p.cheek_height)
                 for s in (-1, 1))
    brows = sum(bump(s * p.eye_dx, p.eye_y - 0.1, 0.14, 0.05, 0.08) for s in (-1, 1))
    sockets = sum(bump(s * p.eye_dx, p.eye_y, p.eye_radius * 1.6, p.eye_radius * 1.2, -0.08) for s in (-1, 1))
    return (dome + nose + cheeks + brows + sockets) * inside, inside


def _albedo(p: AltIdentity, x: np.ndarray, y: np.ndarray, inside: np.ndarray, smile: float,
            eyes_open: float) -> np.ndarray:
    """Per-pixel colour before shading: skin, eyes, brows, lips, hair."""
    colour = np.ones((*x.shape, 3)) * np.array(p.albedo)
    for side in (-1, 1):
        dx, dy = x - side * p.eye_dx, y - p.eye_y
        white = (dx / p.eye_radius) ** 2 + (dy / (p.eye_radius * 0.55 * eyes_open + 1e-3)) ** 2 < 1
        colour[white] = (0.92, 0.9, 0.86)
        colour[white & (dx ** 2 + dy ** 2 < (p.eye_radius * 0.45) ** 2)] = p.iris
        colour[white & (dx ** 2 + dy ** 2 < (p.eye_radius * 0.2) ** 2)] = (0.02, 0.02, 0.02)
        brow = (np.abs(dy + p.brow_height) < p.brow_weight) & (np.abs(dx) < p.eye_radius * 1.5)
        colour[brow] = np.array(p.hair_colour) * 0.8
    curve = (x / p.mouth_width) ** 2 * 0.06 * smile
    lips = (np.abs(y - p.mouth_y + curve) < 0.035) & (np.abs(x) < p.mouth_width)
    colour[lips] = np.array(p.albedo) * np.array((0.9, 0.5, 0.5)) * p.lip_tone + 0.1
    hair = (y < p.hairline + 0.05 * np.sin(x * 9)) | ((np.abs(x) > p.head_rx * (1 - 0.2 * p.hair_sides)) & (y < 0.1))
    colour[hair & inside] = p.hair_colour
    return colour


def render_face(identity: AltIdentity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """An aligned (size, size, 3) uint8 crop: shaded height field with random pose, light, expression, camera."""
    return _render(identity, rng, size)[0]


def _render(identity: AltIdentity, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The crop of :func:`render_face` and the head's coverage mask (True inside the head)."""
    yaw, roll = rng.uniform(-0.35, 0.35), np.radians(rng.uniform(-10, 10))
    smile, eyes_open = rng.uniform(-0.5, 1.0), 1 - rng.uniform(0, 1) ** 4
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    scale = rng.uniform(0.92, 1.08)
    xr = (np.cos(roll) * xs + np.sin(roll) * ys) / scale
    yr = (-np.sin(roll) * xs + np.cos(roll) * ys) / scale + 0.05
    # yaw: sample the frontal face where a turned head's visible surface would come from (first order)
    height, _ = _height_field(identity, xr, yr, smile)
    x_src = xr / np.cos(yaw) - height * np.tan(yaw)
    height, inside = _height_field(identity, x_src, yr, smile)
    gy, gx = np.gradient(height, 2 / size)
    normal = np.stack([-gx, -gy, np.ones_like(gx)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.4), 1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.25, 0.55)
    shade = ambient + (1 - ambient) * np.clip(normal @ light, 0, 1)
    colour = _albedo(identity, x_src, yr, inside, smile, eyes_open) * shade[..., None]
    if rng.random() < 0.12:  # sunglasses
        band = (np.abs(yr - identity.eye_y) < identity.eye_radius * 1.3) & (np.abs(x_src) < identity.eye_dx + 0.15)
        colour[band & inside] = 0.05
    background = rng.uniform(0.1, 0.9, 3) * (1 - 0.3 * (ys[..., None] + 1) / 2)
    pixels = np.where(inside[..., None], colour, background) * rng.uniform(0.7, 1.25) * 255
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0, 1.2) * size / 112))
    noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(1, 10), (size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), inside


def _backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An outdoor-ish backdrop unlike faces.py's panels: smooth colour waves, soft blobs and thin wires."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.zeros((height, width, 3), np.float32) + rng.uniform(0.2, 0.8, 3).astype(np.float32)
    for _ in range(3):
        angle, period = rng.uniform(0, np.pi), rng.uniform(80, 600)
        wave = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) / period * 2 * np.pi + rng.uniform(0, 6.3))
        pixels += wave[..., None] * rng.uniform(-0.15, 0.15, 3).astype(np.float32)
    for _ in range(int(rng.integers(3, 12))):  # blobs: a detector must not take every round thing for a head
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8, 90)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
        pixels += blob[..., None] * (rng.uniform(0, 1, 3).astype(np.float32) - pixels.mean())
    for _ in range(int(rng.integers(0, 5))):
        y0, slope = rng.uniform(0, height), rng.uniform(-0.3, 0.3)
        pixels[np.abs(ys - (y0 + slope * xs)) < rng.uniform(0.5, 2.5)] = rng.uniform(0, 0.4)
    return np.clip(pixels * 255, 0, 255).astype(np.uint8)


def render_scene(identities: list[AltIdentity], rng: np.random.Generator, width: int = 640,
                 height: int = 480) -> tuple[np.ndarray, list[tuple[Box, None]]]:
    """A (height, width, 3) frame with each identity's head pasted at 24-180 px (not overlapping, some dropped
    when there is no room) and per pasted head its box (x0, y0, x1, y1); no landmarks (None), unlike faces.py."""
    frame = _backdrop(rng, width, height)
    placed: list[tuple[Box, None]] = []
    taken: list[Box] = []
    for identity in identities:
        side = int(rng.uniform(24, min(180, width, height) + 1))
        spot = _free_spot(rng, taken, side, width, height)
        if spot is None:
            continue
        x, y = spot
        taken.append((x, y, x + side, y + side))
        crop, inside = _render(identity, rng, side)
        region = frame[y:y + side, x:x + side]
        region[inside] = crop[inside]
        rows, cols = np.nonzero(inside)
        placed.append(((float(x + cols.min()), float(y + rows.min()), float(x + cols.max() + 1),
                        float(y + rows.max() + 1)), None))
    return frame, placed


def _free_spot(rng: np.random.Generator, taken: list[Box], side: int, width: int,
               height: int) -> tuple[int, int] | None:
    for _ in range(30):
        x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        if all(x + side < x0 or x1 < x or y + side < y0 or y1 < y for x0, y0, x1, y1 in taken):
            return x, y
    return None

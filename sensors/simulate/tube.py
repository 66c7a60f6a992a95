"""Procedural drawing of translucent tube parts and their defects (numpy, Pillow for JPEG).

The optics are deliberately simple but give the cues a real inspection camera sees:
a bright backlight with a gradient and vignetting, a translucent tube whose walls and
inner lumen show as darker lines (longer light path), a specular streak, faint dust
on the backlight (not a part defect), focus blur and sensor noise.  Defects are drawn
into small patches so that a frame renders in a few tens of milliseconds.

The "broad" conditions (``broad_tube``, ``darkfield``, ``glints``, ``finish_broad``) add
steep and curved poses, finite segments with cut ends, parts running across the frame
border, dark-field lighting (dark background, glowing walls, defects scattering bright),
specular glints, exposure/gain and JPEG compression.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

HEIGHT, WIDTH = 480, 640
DEFECT_KINDS = ("scratch", "bubble", "spot", "kink")


@dataclass(frozen=True)
class Kink:
    """A fold: the centre line jumps sideways, the tube narrows and a crease crosses it."""

    along: float
    amplitude: float
    width: float
    narrowing: float
    crease: float
    slope: float


@dataclass
class Tube:
    """Pose and optics of one part; ``kinks`` deform its silhouette."""

    cx: float
    cy: float
    angle: float
    radius: float
    bend: float
    wall_px: float
    wall_dark: float
    body_dark: float
    lumen_ratio: float
    lumen_dark: float
    highlight_pos: float
    highlight_gain: float
    highlight_px: float
    kinks: list[Kink] = field(default_factory=list)
    ends: tuple[float, float] | None = None  # axis range of a finite segment (cut ends); None: spans the frame

    def coords(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Along-axis and across-axis coordinates (pixels) of image points."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        dx, dy = xs - self.cx, ys - self.cy
        return dx * cos + dy * sin, -dx * sin + dy * cos

    def point(self, along: float, t: float) -> tuple[float, float]:
        """Image (y, x) of the point at ``along`` on the axis and relative across position ``t``."""
        across = self.centre_offset(np.float64(along), nominal=False) + t * self.radius
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return float(self.cy + along * sin + across * cos), float(self.cx + along * cos - across * sin)

    def centre_offset(self, along: np.ndarray, nominal: bool) -> np.ndarray:
        offset = self.bend * along**2
        if not nominal:
            for kink in self.kinks:
                offset = offset + kink.amplitude * np.exp(-0.5 * ((along - kink.along) / kink.width) ** 2)
        return offset

    def radius_at(self, along: np.ndarray, nominal: bool) -> np.ndarray:
        radius = np.full_like(along, self.radius)
        if not nominal:
            for kink in self.kinks:
                bump = np.exp(-0.5 * ((along - kink.along) / kink.width) ** 2)
                radius = radius * (1 - kink.narrowing * bump)
        return radius

    def relative(self, ys: np.ndarray, xs: np.ndarray, nominal: bool = False) -> tuple[np.ndarray, ...]:
        """(along, t, radius): t is -1..1 across the tube, |t| > 1 outside."""
        along, across = self.coords(ys, xs)
        radius = self.radius_at(along, nominal)
        return along, (across - self.centre_offset(along, nominal)) / radius, radius


def coverage(t: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Anti-aliased share of a pixel that lies inside the tube."""
    return np.clip((1 - np.abs(t)) * radius + 0.5, 0.0, 1.0)


def structure(tube: Tube, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(absorption, specular streak, coverage) of the tube: walls, body, lumen, kink creases, cut ends."""
    along, t, radius = tube.relative(ys, xs)
    inside = coverage(t, radius)
    edge_px = (1 - np.abs(t)) * radius
    absorb = tube.body_dark * np.sqrt(np.clip(1 - t * t, 0, 1))
    absorb += tube.wall_dark * np.exp(-((edge_px / tube.wall_px) ** 2))
    absorb += tube.lumen_dark * np.exp(-(((np.abs(t) - tube.lumen_ratio) * radius / 1.3) ** 2))
    for kink in tube.kinks:
        crease = along - kink.along - kink.slope * t * radius
        absorb += kink.crease * np.exp(-((crease / 1.1) ** 2))
    if tube.ends is not None:  # a cut end: the silhouette stops and the cut face shows as a wall-like rim
        end_px = np.minimum(along - tube.ends[0], tube.ends[1] - along)
        inside = inside * np.clip(end_px + 0.5, 0.0, 1.0)
        absorb += tube.wall_dark * np.exp(-((end_px / (1.5 * tube.wall_px)) ** 2))
    streak = np.exp(-(((t - tube.highlight_pos) * radius / tube.highlight_px) ** 2))
    streak *= 0.75 + 0.25 * np.cos(along / 57.0)
    return absorb, streak, inside


def draw_tube(tube: Tube, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transmission (multiplies the backlight) and additive highlight of the tube, plus coverage."""
    absorb, streak, inside = structure(tube, ys, xs)
    return 1 - inside * np.clip(absorb, 0, 0.9), inside * tube.highlight_gain * streak, inside


def in_segment(tube: Tube, along: np.ndarray) -> np.ndarray:
    if tube.ends is None:
        return np.ones_like(along, dtype=bool)
    return (along >= tube.ends[0]) & (along <= tube.ends[1])


def kink_mask(tube: Tube, kink: Kink, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Pixels that a kink changes: the silhouette difference and the crease line."""
    along, t, radius = tube.relative(ys, xs)
    _, t0, _ = tube.relative(ys, xs, nominal=True)
    changed = (np.abs(t) <= 1) != (np.abs(t0) <= 1)
    near = (np.abs(along - kink.along) < 2.5 * kink.width) & in_segment(tube, along)
    crease = (np.abs(along - kink.along - kink.slope * t * radius) < 1.6) & (np.abs(t) <= 1) & in_segment(tube, along)
    return bool_(changed & near) | crease


def bool_(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=bool)


def backlight(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bright, uneven backlight: level, linear gradient, vignetting and a soft glare."""
    level = rng.uniform(0.55, 0.85)
    gy, gx = rng.uniform(-0.18, 0.18, size=2)
    v = rng.uniform(0.05, 0.3)
    ny, nx = ys / HEIGHT - 0.5, xs / WIDTH - 0.5
    light = level * (1 + gx * nx + gy * ny) * (1 - v * (nx * nx + ny * ny) * 2)
    if rng.random() < 0.5:
        gy0, gx0 = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
        spread = rng.uniform(40, 140)
        light += rng.uniform(0.03, 0.12) * np.exp(-((ys - gy0) ** 2 + (xs - gx0) ** 2) / (2 * spread**2))
    return light


def random_tube(rng: np.random.Generator) -> Tube:
    """A part in a random pose with random optics."""
    radius = rng.uniform(26, 50)
    return Tube(
        cx=WIDTH / 2 + rng.uniform(-60, 60),
        cy=HEIGHT / 2 + rng.uniform(-45, 45),
        angle=np.deg2rad(rng.uniform(-10, 10)),
        radius=radius,
        bend=rng.uniform(-1.2e-4, 1.2e-4),
        wall_px=rng.uniform(1.8, 4.0),
        wall_dark=rng.uniform(0.25, 0.55),
        body_dark=rng.uniform(0.05, 0.2),
        lumen_ratio=rng.uniform(0.3, 0.55),
        lumen_dark=rng.uniform(0.0, 0.2),
        highlight_pos=rng.uniform(-0.5, 0.5),
        highlight_gain=rng.uniform(0.0, 0.25),
        highlight_px=rng.uniform(2.0, 7.0),
    )


@dataclass(frozen=True)
class Patch:
    """An additive intensity patch and the defect's pixel mask, placed at (y0, x0)."""

    y0: int
    x0: int
    add: np.ndarray
    mask: np.ndarray


def patch_grid(cy: float, cx: float, half: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Integer pixel grid of a square patch around a point, clipped to the frame."""
    y0, x0 = max(int(cy - half), 0), max(int(cx - half), 0)
    y1, x1 = max(min(int(cy + half) + 2, HEIGHT), y0), max(min(int(cx + half) + 2, WIDTH), x0)  # empty off-frame
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return y0, x0, ys, xs


def curve_points(rng: np.random.Generator, length: float, zigzag: bool) -> np.ndarray:
    """Points every half pixel along a gently curved or a zig-zag scratch, centred on 0."""
    heading = rng.uniform(0, np.pi)
    if zigzag:
        turns = np.cumsum(rng.choice([-1, 1], 4) * rng.uniform(1.0, 2.0, 4))
        headings = heading + np.concatenate([[0.0], turns])
    else:
        headings = heading + np.linspace(0, rng.uniform(-0.8, 0.8), 5)
    step = length / len(headings)
    vertices = np.vstack([[0.0, 0.0], np.cumsum(step * np.c_[np.sin(headings), np.cos(headings)], axis=0)])
    pieces = [np.linspace(vertices[i], vertices[i + 1], max(int(step * 2), 2)) for i in range(len(headings))]
    points = np.vstack(pieces)
    return points - points.mean(axis=0)


def scratch(rng: np.random.Generator, cy: float, cx: float, length: float, zigzag: bool) -> Patch:
    """A thin dark or bright scratch line."""
    points = curve_points(rng, length, zigzag) + np.array([cy, cx])
    width = rng.uniform(0.7, 1.6)
    contrast = rng.uniform(0.1, 0.3) * (-1 if rng.random() < 0.7 else 0.8)
    half = np.abs(points - np.array([cy, cx])).max() + 4
    y0, x0, ys, xs = patch_grid(cy, cx, half)
    dist2 = ((ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2).min(axis=-1)
    fade = rng.uniform(0.6, 1.0)
    add = contrast * fade * np.exp(-dist2 / (2 * width**2))
    return Patch(y0, x0, add, dist2 <= max(width, 0.9) ** 2 + 0.5)


def bubble(rng: np.random.Generator, cy: float, cx: float, radius: float, aspect: float) -> Patch:
    """An air bubble or inclusion: a dark refracting rim around a brighter core."""
    angle = rng.uniform(0, np.pi)
    contrast = rng.uniform(0.12, 0.3)
    y0, x0, ys, xs = patch_grid(cy, cx, radius * aspect + 4)
    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
    rho = np.sqrt((u / (radius * aspect)) ** 2 + (v / radius) ** 2)
    rim = max(0.7, 0.25 * radius) / radius
    add = -contrast * np.exp(-(((rho - 1) / rim) ** 2)) + 0.6 * contrast * np.exp(-((rho / 0.4) ** 2))
    return Patch(y0, x0, add, rho <= 1 + 1 / radius)


def spot(rng: np.random.Generator, cy: float, cx: float, sigma: float, ring: bool) -> Patch:
    """Dark contamination: an irregular blob of a few overlapping Gaussians, or a ring stain."""
    contrast = rng.uniform(0.15, 0.4)
    y0, x0, ys, xs = patch_grid(cy, cx, 3.5 * sigma + 3)
    if ring:
        dist = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
        shape = np.exp(-(((dist - 2 * sigma) / max(0.8, 0.35 * sigma)) ** 2))
    else:
        shape = np.zeros_like(ys)
        for _ in range(rng.integers(1, 4)):
            oy, ox = rng.normal(0, 0.6 * sigma, 2)
            s = sigma * rng.uniform(0.6, 1.0)
            shape = np.maximum(shape, np.exp(-((ys - cy - oy) ** 2 + (xs - cx - ox) ** 2) / (2 * s * s)))
    return Patch(y0, x0, -contrast * shape, shape >= 0.3)


def cluster(rng: np.random.Generator, cy: float, cx: float, spread: float, kind: str) -> list[Patch]:
    """A cluster of tiny bubbles or specks (a shape the training set never shows)."""
    patches = []
    for _ in range(rng.integers(3, 7)):
        py, px = cy + rng.uniform(-spread, spread), cx + rng.uniform(-spread, spread)
        if kind == "bubble":
            patches.append(bubble(rng, py, px, rng.uniform(1.2, 2.2), 1.0))
        else:
            patches.append(spot(rng, py, px, rng.uniform(0.6, 1.0), ring=False))
    return patches


def dust(rng: np.random.Generator, frame: np.ndarray, inside: np.ndarray) -> list[tuple[int, int]]:
    """Faint specks on the backlight outside the part: not defects, but they look alike; returns centres."""
    centres = []
    for _ in range(rng.poisson(1.0)):
        cy, cx = rng.uniform(4, HEIGHT - 4), rng.uniform(4, WIDTH - 4)
        if inside[int(cy), int(cx)] > 0:
            continue
        centres.append((int(cy), int(cx)))
        patch = spot(rng, cy, cx, rng.uniform(0.8, 2.5), ring=False)
        add = patch.add * rng.uniform(0.2, 0.5)
        frame[patch.y0 : patch.y0 + add.shape[0], patch.x0 : patch.x0 + add.shape[1]] += add
    return centres


def finish(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """Focus blur, shot and read noise, 8-bit quantisation."""
    sigma = rng.uniform(0.0, 1.1)
    if sigma > 0.3:
        frame = ndimage.gaussian_filter(frame, sigma, truncate=3.0)
    read = rng.uniform(0.004, 0.02)
    noise = rng.standard_normal(frame.shape, dtype=np.float32)
    frame = frame + noise * np.sqrt(read**2 + 0.0004 * np.clip(frame, 0, None))
    return np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)


# --- broad conditions -------------------------------------------------------------------------

LIGHTINGS = ("backlit", "darkfield")


@dataclass(frozen=True)
class Scene:
    """The imaging conditions of one frame (what the evaluation groups by)."""

    conditions: str  # "narrow" (the 1.0 generator) or "broad"
    lighting: str  # "backlit" (bright background, dark walls) or "darkfield" (dark background, glowing walls)
    angle_deg: float  # pose of the tube axis against the frame's x axis
    cut_ends: int  # visible cut ends of a finite segment (0: the tube spans the frame)
    crosses_border: bool  # a tube wall runs at or across the top/bottom frame border
    blur: float  # focus blur sigma (pixels)
    jpeg_quality: int | None  # None: no compression

    @property
    def pose_bucket(self) -> str:
        a = abs(self.angle_deg)
        return "0-10 deg" if a < 10 else "10-20 deg" if a < 20 else "20-30 deg"


def broad_tube(rng: np.random.Generator) -> tuple[Tube, bool, int]:
    """A part in a broad pose: +-30 deg, strong bends, widths 40-130 px, parts at and across the
    frame border, finite segments with cut ends.  Returns (tube, crosses_border, cut ends).

    A draw that leaves less than 4% of the frame on the part (a tube almost entirely outside it)
    is drawn again from the same stream, so every frame shows a part."""
    ys, xs = np.mgrid[4:HEIGHT:8, 4:WIDTH:8].astype(np.float32)
    for _ in range(20):
        drawn = one_broad_tube(rng)
        if structure(drawn[0], ys, xs)[2].mean() >= 0.04:
            break
    return drawn


def one_broad_tube(rng: np.random.Generator) -> tuple[Tube, bool, int]:
    radius = rng.uniform(20, 65)
    angle = np.deg2rad(rng.uniform(-30, 30))
    cx = WIDTH / 2 + rng.uniform(-90, 90)
    cy = HEIGHT / 2 + rng.uniform(-70, 70)
    border = rng.random() < 0.3
    if border:  # centre line between half a radius outside and 1.3 radii inside the top or bottom border
        side = rng.choice([-1, 1])
        cy = HEIGHT / 2 + side * (HEIGHT / 2 - rng.uniform(-0.5, 1.3) * radius)
    tube = Tube(
        cx=cx, cy=cy, angle=angle, radius=radius,
        bend=rng.uniform(-5e-4, 5e-4) if rng.random() < 0.6 else rng.uniform(-1.2e-4, 1.2e-4),
        wall_px=rng.uniform(1.5, 5.0),
        wall_dark=rng.uniform(0.15, 0.7),
        body_dark=rng.uniform(0.02, 0.3),
        lumen_ratio=rng.uniform(0.25, 0.6),
        lumen_dark=rng.uniform(0.0, 0.25),
        highlight_pos=rng.uniform(-0.6, 0.6),
        highlight_gain=rng.uniform(0.0, 0.35),
        highlight_px=rng.uniform(1.5, 8.0),
    )
    cut = 0
    if rng.random() < 0.35:  # a finite segment: one or both cut ends inside the frame
        half = 0.5 * WIDTH / np.cos(angle)
        low, high = -half - (cx - WIDTH / 2), half - (cx - WIDTH / 2)
        if rng.random() < 0.7:
            end = rng.uniform(low + 0.25 * (high - low), high - 0.25 * (high - low))
            tube.ends = (end, 1e6) if rng.random() < 0.5 else (-1e6, end)
            cut = 1
        else:
            length = rng.uniform(0.35, 0.75) * (high - low)
            start = rng.uniform(low + 20, high - 20 - length)
            tube.ends = (start, start + length)
            cut = 2
    return tube, border or abs(cy - HEIGHT / 2) + radius > HEIGHT / 2 - 4, cut


def darkfield(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, absorb: np.ndarray,
              streak: np.ndarray, inside: np.ndarray, tube: Tube) -> np.ndarray:
    """Dark-field image: a dark, uneven background; walls, cut faces, creases and lumen scatter bright."""
    level = rng.uniform(0.02, 0.12)
    gy, gx = rng.uniform(-0.4, 0.4, size=2)
    ny, nx = ys / HEIGHT - 0.5, xs / WIDTH - 0.5
    field_ = np.clip(1 + gx * nx + gy * ny, 0.3, None)
    glow = rng.uniform(0.9, 1.8)
    body = rng.uniform(0.02, 0.12)
    background = level * field_ * (1 - 0.5 * inside)
    scatter = inside * (body + glow * np.clip(absorb, 0, 1.0)) * field_
    return background + scatter + inside * tube.highlight_gain * 0.6 * streak


def glints(rng: np.random.Generator, tube: Tube, frame: np.ndarray, inside: np.ndarray,
           count: int) -> list[tuple[int, int]]:
    """Specular reflections on the tube: soft bright spots stretched along the axis (not defects)."""
    centres = []
    cos, sin = np.cos(tube.angle), np.sin(tube.angle)
    for _ in range(count):
        along = rng.uniform(-WIDTH / 2, WIDTH / 2) - (tube.cx - WIDTH / 2) * cos
        y, x = tube.point(along, rng.uniform(-0.85, 0.85))
        long = rng.uniform(3.0, 10.0)
        short = max(long / rng.uniform(2.5, 5.0), 0.8)
        gain = rng.uniform(0.15, 0.55)
        if not (0 <= y < HEIGHT and 0 <= x < WIDTH) or inside[int(y), int(x)] < 0.5:
            continue
        y0, x0, ys, xs = patch_grid(y, x, 3 * long + 2)
        u = (xs - x) * cos + (ys - y) * sin
        v = -(xs - x) * sin + (ys - y) * cos
        add = gain * np.exp(-0.5 * ((u / long) ** 2 + (v / short) ** 2))
        frame[y0 : y0 + add.shape[0], x0 : x0 + add.shape[1]] += add * inside[y0 : y0 + add.shape[0],
                                                                          x0 : x0 + add.shape[1]]
        centres.append((int(y), int(x)))
    return centres


def broad_dust(rng: np.random.Generator, frame: np.ndarray, inside: np.ndarray, bright: bool) -> list[tuple[int, int]]:
    """Dust specks beside the part: dark on a backlight, bright (scattering) in dark-field; returns centres."""
    centres = []
    for _ in range(rng.poisson(1.5)):
        cy, cx = rng.uniform(4, HEIGHT - 4), rng.uniform(4, WIDTH - 4)
        sigma, strength = rng.uniform(0.8, 3.0), rng.uniform(0.2, 0.6)
        if inside[int(cy), int(cx)] > 0:
            continue
        centres.append((int(cy), int(cx)))
        patch = spot(rng, cy, cx, sigma, ring=False)
        add = (-patch.add if bright else patch.add) * strength
        frame[patch.y0 : patch.y0 + add.shape[0], patch.x0 : patch.x0 + add.shape[1]] += add
    return centres


def finish_broad(rng: np.random.Generator, frame: np.ndarray) -> tuple[np.ndarray, float, int | None]:
    """Focus blur, exposure/gain (with clipping), shot and read noise, 8 bits, JPEG (quality 60-95)."""
    sigma = rng.uniform(0.0, 2.2) if rng.random() < 0.8 else 0.0
    if sigma > 0.3:
        frame = ndimage.gaussian_filter(frame, sigma, truncate=3.0)
    frame = frame * rng.uniform(0.7, 1.35) + rng.uniform(-0.03, 0.03)
    read = rng.uniform(0.004, 0.03)
    noise = rng.standard_normal(frame.shape, dtype=np.float32)
    frame = frame + noise * np.sqrt(read**2 + rng.uniform(0.0002, 0.0008) * np.clip(frame, 0, None))
    image = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(60, 96)) if rng.random() < 0.85 else None
    if quality is not None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"), dtype=np.uint8)
    return image, float(sigma), quality

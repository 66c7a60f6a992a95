"""Defect planning and shapes for the independent tube renderer (tube_alt): scratches, bubbles, spots and kinks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

KINDS = ("scratch", "bubble", "spot", "kink")
VARIANTS = {"scratch": ("dark", "bright"), "bubble": ("round", "elongated"), "spot": ("blob", "cluster"),
            "kink": ("fold", "narrowing")}


@dataclass(frozen=True)
class Dent:
    """A kink: one side of the tube pushed inwards over a short stretch, with an optional crease across the wall."""

    u: float
    width: float  # along the axis, px
    depth: float  # fraction of the outer radius
    side: float  # +1 or -1: which wall
    crease: float  # strength of the fold line

    def warp(self, u: np.ndarray, d: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """The cross-tube coordinate as the dented tube sees it, and the crease's strength per pixel."""
        g = np.exp(-(((u - self.u) / self.width) ** 2))
        on_side = d * self.side > 0
        warped = np.where(on_side, d / (1.0 - self.depth * g), d)
        ad = np.abs(warped)
        line = np.exp(-(((u - self.u) / (0.3 * self.width + 0.6)) ** 2))
        crease = self.crease * line * on_side * (ad < radius) * np.clip(2.0 * ad / radius - 0.6, 0.0, 1.0)
        return warped, crease


@dataclass(frozen=True)
class DefectSpec:
    """A planned defect: where (u, d on the tube; x, y in the frame), how large, and its shape seed."""

    kind: str
    variant: str
    size: float
    u: float
    d: float
    x: float
    y: float
    angle: float  # relative to the local tube axis, radians
    contrast: float  # extra peak contrast above the visibility floor, DN
    seed: int
    dent: Dent | None = None


def plan_defects(rng: np.random.Generator, geo: Any, points: list, kinds: tuple | None, lighting: str,
                 shape: tuple[int, int]) -> list[DefectSpec]:
    """1-3 defects on the visible tube, apart from each other and from the nuisance specks; at most one kink."""
    n = int(rng.integers(1, 4))
    drawn = [KINDS[int(k)] for k in rng.integers(0, 4, size=3)]
    children = [np.random.default_rng(int(s)) for s in rng.integers(0, 2**62, size=3)]
    chosen = list(kinds) if kinds is not None else drawn[:n]
    specs: list[DefectSpec] = []
    for i, (kind, child) in enumerate(zip(chosen, children, strict=False)):
        if kind == "kink" and any(s.kind == "kink" for s in specs):
            kind = "scratch" if kinds is None else kind
        spec = _plan_one(kind, child, geo, points, specs, lighting, shape)
        if spec is None and i == 0:
            spec = _plan_one(kind, child, geo, [], [], lighting, shape)
        if spec is not None:
            specs.append(spec)
    return specs


def _plan_one(kind: str, rng: np.random.Generator, geo: Any, points: list, others: list[DefectSpec],
              lighting: str, shape: tuple[int, int]) -> DefectSpec | None:
    height, width = shape
    size = float(np.exp(rng.uniform(np.log(4.0), np.log(60.0))))
    variant = str(rng.choice(VARIANTS[kind]))
    if kind == "scratch" and lighting == "darkfield":
        variant = "bright"  # a scratch only scatters light into the dark-field lens
    if kind in ("bubble", "spot"):
        size = min(size, 1.5 * geo.radius)
    angle = float(rng.normal(0.0, 0.45)) if kind == "scratch" else float(rng.uniform(-np.pi, np.pi))
    contrast, seed, side = float(rng.uniform(0.0, 35.0)), int(rng.integers(0, 2**62)), float(rng.choice([-1, 1]))
    depth, crease = float(rng.uniform(0.12, 0.4)), float(rng.uniform(0.25, 0.6))
    wall = geo.radius - geo.inner
    for attempt in range(400):
        if attempt and attempt % 50 == 0:
            size = max(4.0, size * 0.75)
        span = 4.0 * float(np.clip(size / 4.0, 4.0, 14.0)) if kind == "kink" else size
        half = span / 2
        umax = geo.length / 2 - half - 6
        if umax <= 0:
            continue
        u = float(rng.uniform(-umax, umax))
        dmax = max(geo.radius - half - 2, 0.3 * geo.radius)
        d = side * (geo.radius - 0.5 * wall) if kind == "kink" else float(rng.uniform(-dmax, dmax))
        x, y = (float(v) for v in geo.point(u, d))
        if not (half + 3 <= x < width - half - 3 and half + 3 <= y < height - half - 3):
            continue
        if any(np.hypot(x - px, y - py) < half + 10 for py, px in points):
            continue
        if any(np.hypot(x - o.x, y - o.y) < half + o.size / 2 + 8 for o in others):
            continue
        dent = None
        if kind == "kink":
            fold = crease if variant == "fold" else 0.0
            dent = Dent(u, span / 4, min(depth, 1.5 * span / 4 / geo.radius), side, fold)
        return DefectSpec(kind, variant, span, u, d, x, y, angle, contrast, seed, dent)
    return None


def shape_layer(spec: DefectSpec, dx: np.ndarray, dy: np.ndarray, axis: float, lighting: str,
                level: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit-strength layers of a non-kink defect: (m, p) with radiance -> radiance * (1 + a m) + a p."""
    rng = np.random.default_rng(spec.seed)
    ang = axis + spec.angle
    if spec.kind == "scratch":
        alpha = _scratch(spec.size, dx, dy, ang, rng)
        if spec.variant == "dark":
            return -alpha, np.zeros_like(alpha)
        return np.zeros_like(alpha), 0.5 * level * alpha
    if spec.kind == "bubble":
        ring, inside = _bubble(spec.size, spec.variant, dx, dy, ang, rng)
        if lighting == "backlit":
            return -ring + 0.35 * inside, np.zeros_like(ring)
        return -0.3 * inside, level * (0.5 * ring + 0.08 * inside)
    alpha = _spot(spec.size, spec.variant, dx, dy, rng)
    if lighting == "backlit":
        return -alpha, np.zeros_like(alpha)
    return -0.5 * alpha, 0.35 * level * alpha


def _scratch(length: float, dx: np.ndarray, dy: np.ndarray, ang: float, rng: np.random.Generator) -> np.ndarray:
    """A thin quadratic-Bezier line that fades at its ends and varies in depth along its length."""
    bow, sigma = rng.uniform(-0.25, 0.25), rng.uniform(0.5, 1.1)
    freq, phase = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
    e, n = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
    p0, p1, p2 = -length / 2 * e, 2 * bow * length * n, length / 2 * e
    t = np.linspace(0.0, 1.0, max(int(3 * length), 12))[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    d2 = (dx.ravel()[:, None] - curve[:, 0]) ** 2 + (dy.ravel()[:, None] - curve[:, 1]) ** 2
    nearest = np.argmin(d2, axis=1)
    tn = t[nearest, 0]
    profile = np.sin(np.pi * tn) ** 0.35 * (0.75 + 0.25 * np.cos(2 * np.pi * freq * tn + phase))
    alpha = np.exp(-d2[np.arange(len(nearest)), nearest] / (2 * sigma * sigma)) * profile
    return alpha.reshape(dx.shape).astype(np.float32)


def _bubble(size: float, variant: str, dx: np.ndarray, dy: np.ndarray, ang: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse of gas in the wall: a refracting rim and a brighter, lens-like interior."""
    a = max(size / 2, 2.0)
    b = max(a * (rng.uniform(0.65, 1.0) if variant == "round" else rng.uniform(0.3, 0.55)), 1.5)
    pa = dx * np.cos(ang) + dy * np.sin(ang)
    pb = -dx * np.sin(ang) + dy * np.cos(ang)
    rho = np.sqrt((pa / a) ** 2 + (pb / b) ** 2)
    rim = max(0.8, 0.18 * b)
    ring = np.exp(-(((rho - 1.0) * b / rim) ** 2))
    inside = np.sqrt(np.clip(1.0 - rho, 0.0, 1.0))
    return ring.astype(np.float32), inside.astype(np.float32)


def _spot(size: float, variant: str, dx: np.ndarray, dy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contamination: one irregular blob with a wobbly outline, or a cluster of small particles."""
    r0 = max(size / 2, 1.5)
    if variant == "cluster":
        alpha = np.zeros_like(dx)
        for _ in range(int(rng.integers(3, 8))):
            cx, cy = rng.uniform(-0.7, 0.7, size=2) * r0
            r = rng.uniform(0.8, max(1.2, r0 / 3))
            alpha = np.maximum(alpha, np.clip(r + 0.5 - np.hypot(dx - cx, dy - cy), 0.0, 1.0))
        return alpha.astype(np.float32)
    theta = np.arctan2(dy, dx)
    edge = np.full_like(dx, r0)
    for k in (2, 3, 4):
        edge += r0 * rng.uniform(0.0, 0.18) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    grain = ndimage.gaussian_filter(rng.standard_normal(dx.shape), max(r0 / 4, 1.0))
    density = 0.8 + 0.2 * grain / max(float(np.abs(grain).max()), 1e-6)
    return (np.clip((edge - np.hypot(dx, dy)) / 1.2 + 0.5, 0.0, 1.0) * density).astype(np.float32)

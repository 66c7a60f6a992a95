"""Independent tube-part renderer for tests: ray-optics wall transmission (backlit) and edge scatter (dark-field)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from sensors.simulate.parts import Defect, Part
from sensors.simulate.tube_alt_defects import KINDS, Dent, plan_defects, shape_layer

HEIGHT, WIDTH = 480, 640
CONDITION_KEYS = ("lighting", "angle_deg", "curvature", "width_px", "opacity", "jpeg_quality", "crosses_border",
                  "exposure", "noise", "blur", "length_px")
_STREAM = {"conditions": 11, "placement": 12, "scene": 13, "defects": 14, "sensor": 15}


@cache
def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


@dataclass(frozen=True)
class Geometry:
    """A tube segment: a parabolic centre line through (cx, cy) at angle theta, outer and inner radius."""

    cx: float
    cy: float
    theta: float
    kappa: float
    length: float
    radius: float
    inner: float

    def coords(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, d): position along the centre line and signed distance across it."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        dx, dy = x - self.cx, y - self.cy
        u = dx * c + dy * s
        v = -dx * s + dy * c
        slope = self.kappa * u
        return u, (v - 0.5 * self.kappa * u * u) / np.sqrt(1.0 + slope * slope)

    def point(self, u: Any, d: Any) -> tuple[Any, Any]:
        """Frame (x, y) of the point u along the centre line and d across it."""
        slope = self.kappa * np.asarray(u, dtype=float)
        norm = np.sqrt(1.0 + slope * slope)
        pu = u - d * slope / norm
        pv = 0.5 * self.kappa * u * u + d / norm
        c, s = np.cos(self.theta), np.sin(self.theta)
        return self.cx + pu * c - pv * s, self.cy + pu * s + pv * c

    def axis_angle(self, u: float) -> float:
        return float(self.theta + np.arctan(self.kappa * u))


@dataclass(frozen=True)
class Optics:
    """Light source, wall optics and sensor response of one frame."""

    lighting: str
    opacity: float
    level: float  # backlight brightness (backlit) or lamp strength (dark-field), DN
    dark: float  # dark-field background, DN
    edge_out: float  # refraction loss at the outer surface at grazing incidence
    edge_in: float
    lens: float  # brightening of the lumen by the tube acting as a cylinder lens
    glow_w: float  # width of the dark-field edge glow, px
    glow_in: float
    volume: float  # dark-field volume scattering of the wall
    vignette: float
    tilt: tuple[float, float]
    electrons: float  # electrons per DN: sets the shot noise


def draw_conditions(seed: int, index: int) -> dict[str, Any]:
    """The frame's conditions, drawn in a fixed order from their own stream (overrides never shift them)."""
    rng = np.random.default_rng([seed, index, _STREAM["conditions"]])
    lighting = "backlit" if rng.random() < 0.5 else "darkfield"
    angle = float(rng.uniform(-30.0, 30.0))
    curved = rng.random() < 0.6
    kappa = float(rng.uniform(1 / 2500, 1 / 450) * rng.choice([-1.0, 1.0]))
    return {"lighting": lighting, "angle_deg": angle, "curvature": kappa if curved else 0.0,
            "width_px": float(rng.uniform(40.0, 130.0)), "opacity": float(rng.uniform(0.08, 0.45)),
            "jpeg_quality": int(rng.integers(60, 96)), "crosses_border": bool(rng.random() < 0.3),
            "exposure": float(rng.uniform(0.75, 1.2)), "noise": float(rng.uniform(0.8, 3.5)),
            "blur": float(rng.uniform(0.4, 1.6)), "length_px": float(rng.uniform(380.0, 560.0))}


@cache
def _ring(inset: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.arange(inset, WIDTH - inset), np.arange(inset, HEIGHT - inset)
    x = np.concatenate([xs, xs, np.full(len(ys), inset), np.full(len(ys), WIDTH - 1 - inset)])
    y = np.concatenate([np.full(len(xs), inset), np.full(len(xs), HEIGHT - 1 - inset), ys, ys])
    return x.astype(np.float32), y.astype(np.float32)


def touches_border(geo: Geometry, inset: int = 0) -> bool:
    u, d = geo.coords(*_ring(inset))
    return bool(np.any((np.abs(d) < geo.radius) & (np.abs(u) < geo.length / 2)))


def _visible_fraction(geo: Geometry) -> float:
    u = np.linspace(-geo.length / 2, geo.length / 2, 64)
    x, y = geo.point(u, 0.0 * u)
    return float(np.mean((x >= 0) & (x < WIDTH) & (y >= 0) & (y < HEIGHT)))


def place(cond: dict[str, Any], seed: int, index: int) -> Geometry:
    """Position the segment: wholly inside the frame, or (crosses_border) cut by the frame's edge."""
    rng = np.random.default_rng([seed, index, _STREAM["placement"]])
    radius = cond["width_px"] / 2
    inner = radius * (1.0 - rng.uniform(0.14, 0.3))
    length, crossing = cond["length_px"], cond["crosses_border"]
    geo = None
    for attempt in range(300):
        if crossing:
            cx, cy = rng.uniform(-0.05, 1.05) * WIDTH, rng.uniform(-0.05, 1.05) * HEIGHT
            size = length * rng.uniform(1.0, 2.0)
        else:
            cx, cy = rng.uniform(0.3, 0.7) * WIDTH, rng.uniform(0.3, 0.7) * HEIGHT
            size = length * 0.93 ** (attempt // 10)
        geo = Geometry(cx, cy, np.deg2rad(cond["angle_deg"]), cond["curvature"], size, radius, inner)
        if crossing and touches_border(geo) and _visible_fraction(geo) >= 0.55:
            return geo
        if not crossing and not touches_border(geo, 5) and _visible_fraction(geo) == 1.0:
            return geo
    assert geo is not None
    return geo


def draw_optics(cond: dict[str, Any], rng: np.random.Generator) -> Optics:
    backlit = cond["lighting"] == "backlit"
    return Optics(lighting=cond["lighting"], opacity=cond["opacity"],
                  level=float(rng.uniform(185, 230) if backlit else rng.uniform(150, 215)),
                  dark=float(rng.uniform(6, 22)), edge_out=float(rng.uniform(0.6, 0.92)),
                  edge_in=float(rng.uniform(0.25, 0.55)), lens=float(rng.uniform(0.02, 0.1)),
                  glow_w=float(rng.uniform(1.5, 4.0)), glow_in=float(rng.uniform(0.35, 0.8)),
                  volume=float(rng.uniform(0.12, 0.3)), vignette=float(rng.uniform(0.0, 0.22)),
                  tilt=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
                  electrons=float(rng.uniform(6.0, 20.0)))


def _illumination(opt: Optics) -> np.ndarray:
    y, x = _grid()
    rx, ry = x / WIDTH - 0.5, y / HEIGHT - 0.5
    return 1.0 - opt.vignette * 2.0 * (rx * rx + ry * ry) + opt.tilt[0] * rx + opt.tilt[1] * ry


def _wall_path(ad: np.ndarray, geo: Geometry) -> np.ndarray:
    """Length of a straight ray's path through the wall material (both walls), normalised to 1 on the axis."""
    chord_o = 2.0 * np.sqrt(np.clip(geo.radius**2 - ad * ad, 0.0, None))
    chord_i = 2.0 * np.sqrt(np.clip(geo.inner**2 - ad * ad, 0.0, None))
    return (chord_o - chord_i) / (2.0 * (geo.radius - geo.inner))


def _transmission(ad: np.ndarray, end: np.ndarray, geo: Geometry, opt: Optics) -> np.ndarray:
    """Backlit: Beer-Lambert absorption along the wall path, refraction losses at grazing surfaces."""
    t = np.power(1.0 - opt.opacity, _wall_path(ad, geo))
    t *= 1.0 - opt.edge_out * np.clip(ad / geo.radius, 0.0, 1.0) ** 10
    rho = np.clip(ad / geo.inner, 0.0, 1.0)
    lumen = (1.0 - opt.edge_in * rho**8) * (1.0 + opt.lens * (1.0 - rho * rho)) * 0.93
    t *= np.where(ad < geo.inner, lumen, 1.0)
    return t * 0.93 * (1.0 - 0.6 * end * (ad > geo.inner))


def _scatter(ad: np.ndarray, end: np.ndarray, geo: Geometry, opt: Optics) -> np.ndarray:
    """Dark-field: light scattered into the lens by the surfaces (edge glow) and by the wall's volume."""
    rim = np.exp(-(((geo.radius - ad) / opt.glow_w) ** 2))
    inner = opt.glow_in * np.exp(-(((ad - geo.inner) / (0.8 * opt.glow_w)) ** 2))
    volume = opt.volume * (0.5 + opt.opacity) * _wall_path(ad, geo)
    return rim + inner + volume + 0.8 * end


def radiance(geo: Geometry, opt: Optics, dent: Dent | None = None) -> np.ndarray:
    """Scene radiance before the sensor, DN: the tube over its background, optionally with a dent."""
    y, x = _grid()
    u, d = geo.coords(x, y)
    crease = np.zeros_like(d)
    if dent is not None:
        d, crease = dent.warp(u, d, geo.radius)
    ad = np.abs(d)
    along = np.clip(geo.length / 2 - np.abs(u) + 0.5, 0.0, 1.0)
    cover = np.clip(geo.radius - ad + 0.5, 0.0, 1.0) * along
    end = np.exp(-(((np.abs(u) - geo.length / 2 + 1.5) / 1.3) ** 2))
    illum = _illumination(opt)
    if opt.lighting == "backlit":
        t = _transmission(ad, end, geo, opt) * (1.0 - crease)
        return (opt.level * illum * (1.0 + cover * (t - 1.0))).astype(np.float32)
    s = _scatter(ad, end, geo, opt) + 0.8 * crease
    return (opt.dark * illum + opt.level * illum * cover * s).astype(np.float32)


def _window(x: float, y: float, half: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    x0, y0 = max(int(x - half), 0), max(int(y - half), 0)
    x1, y1 = min(int(x + half) + 2, WIDTH), min(int(y + half) + 2, HEIGHT)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), xx - x, yy - y


def nuisances(geo: Geometry, opt: Optics, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Dust specks anywhere and specular glints on the tube: (multiplier, addition, (y, x) points)."""
    mult, add = np.ones((HEIGHT, WIDTH), np.float32), np.zeros((HEIGHT, WIDTH), np.float32)
    points: list[tuple[int, int]] = []
    for _ in range(int(rng.integers(0, 5))):
        x, y = rng.uniform(4, WIDTH - 4), rng.uniform(4, HEIGHT - 4)
        r, a = rng.uniform(0.6, 1.8), rng.uniform(0.3, 0.65)
        win, dx, dy = _window(x, y, r + 3)
        alpha = np.clip(r + 0.5 - np.hypot(dx, dy), 0.0, 1.0)
        if opt.lighting == "backlit":
            mult[win] *= 1.0 - a * alpha
        else:
            add[win] += a * 0.6 * opt.level * alpha
        points.append((int(np.rint(y)), int(np.rint(x))))
    for _ in range(int(rng.integers(0, 3))):
        u = rng.uniform(-0.45, 0.45) * geo.length
        d = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 0.8) * geo.radius
        length, sigma, amp = rng.uniform(5, 20), rng.uniform(0.7, 1.4), rng.uniform(40, 110)
        x, y = geo.point(u, d)
        if not (6 <= x < WIDTH - 6 and 6 <= y < HEIGHT - 6):
            continue
        win, dx, dy = _window(x, y, length / 2 + 4)
        ang = geo.axis_angle(u)
        a = dx * np.cos(ang) + dy * np.sin(ang)
        b = -dx * np.sin(ang) + dy * np.cos(ang)
        add[win] += amp * np.exp(-2.0 * (a / (length / 2)) ** 2 - b * b / (2 * sigma * sigma))
        points.append((int(np.rint(y)), int(np.rint(x))))
    return mult, add, points


def sensor(signal: np.ndarray, cond: dict[str, Any], opt: Optics, seed: int, index: int) -> np.ndarray:
    """Shot noise (Poisson-like, from electrons per DN), read noise, 8-bit quantisation and a JPEG round trip."""
    rng = np.random.default_rng([seed, index, _STREAM["sensor"]])
    shot, read = rng.standard_normal(signal.shape), rng.standard_normal(signal.shape)
    out = signal + np.sqrt(np.clip(signal, 0.0, None) / opt.electrons) * shot + cond["noise"] * read
    frame = np.clip(np.round(out), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=int(cond["jpeg_quality"]))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=np.uint8).copy()


def _resolve(seed: int, index: int, overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple | None]:
    unknown = set(overrides) - set(CONDITION_KEYS) - {"kinds"}
    if unknown:
        raise ValueError(f"unknown overrides: {sorted(unknown)}")
    kinds = overrides.get("kinds")
    if kinds is not None and (not 1 <= len(kinds) <= 3 or set(kinds) - set(KINDS)):
        raise ValueError(f"kinds must be 1-3 of {KINDS}")
    cond = draw_conditions(seed, index)
    cond.update({k: v for k, v in overrides.items() if k != "kinds"})
    return cond, None if kinds is None else tuple(kinds)


def render_part_with_conditions(seed: int, index: int, defective: bool, **overrides: Any) -> tuple[Part, dict]:
    """Render one frame and return it with its conditions; the good version of an index is the same scene."""
    cond, kinds = _resolve(seed, index, overrides)
    geo = place(cond, seed, index)
    scene_rng = np.random.default_rng([seed, index, _STREAM["scene"]])
    opt = draw_optics(cond, scene_rng)
    mult, add, points = nuisances(geo, opt, scene_rng)
    defect_rng = np.random.default_rng([seed, index, _STREAM["defects"]])
    specs = plan_defects(defect_rng, geo, points, kinds, opt.lighting, (HEIGHT, WIDTH)) if defective else []
    dent = next((s.dent for s in specs if s.dent is not None), None)
    good = radiance(geo, opt) * mult + add
    rad = good.copy() if dent is None else radiance(geo, opt, dent) * mult + add
    kink_mask = None
    if dent is not None:  # before the other defects change rad
        visible = cond["exposure"] * np.abs(ndimage.gaussian_filter(rad - good, cond["blur"]))
        kink_mask = visible > max(2.0, 0.1 * float(visible.max()))
    mask = np.zeros((HEIGHT, WIDTH), bool)
    defects = []
    for spec in specs:
        if spec.dent is not None and kink_mask is not None:
            part_mask = kink_mask
        else:
            part_mask = _apply_shape(rad, spec, geo, opt, cond)
        defects.append(_ground_truth(spec, part_mask))
        mask |= part_mask
    signal = cond["exposure"] * ndimage.gaussian_filter(rad, cond["blur"])
    image = sensor(signal, cond, opt, seed, index)
    cond = {**cond, "crosses_border": touches_border(geo), "length_px": geo.length,
            "wall_px": geo.radius - geo.inner}
    part = Part(split="alt", index=index, image=image, mask=mask, defects=defects, label=defective,
                annotation=mask.copy(), nuisances=points)
    return part, cond


def _apply_shape(rad: np.ndarray, spec: Any, geo: Geometry, opt: Optics, cond: dict[str, Any]) -> np.ndarray:
    """Scale the defect's contrast to its target (after blur, in DN), apply it in place, return its mask."""
    x, y = geo.point(spec.u, spec.d)
    pad = spec.size / 2 + 4 * cond["blur"] + 6
    win, dx, dy = _window(x, y, pad)
    m, p = shape_layer(spec, dx, dy, geo.axis_angle(spec.u), opt.lighting, opt.level)
    base = rad[win]
    q = cond["exposure"] * ndimage.gaussian_filter(base * m + p, cond["blur"], mode="nearest")
    local = cond["exposure"] * float(base[base.shape[0] // 2, base.shape[1] // 2])
    sigma = float(np.hypot(cond["noise"], np.sqrt(max(local, 0.0) / opt.electrons)))
    target = max(4.0 * sigma, 12.0) + spec.contrast
    amp = target / max(float(np.abs(q).max()), 1e-6)
    if m.min() < 0:
        amp = min(amp, 0.92 / float(-m.min()))
    rad[win] = base * (1.0 + amp * m) + amp * p
    visible = amp * np.abs(q)
    full = np.zeros((HEIGHT, WIDTH), bool)
    full[win] = visible > max(2.0, 0.1 * float(visible.max()))
    return full


def _ground_truth(spec: Any, part_mask: np.ndarray) -> Defect:
    rows, cols = np.flatnonzero(part_mask.any(axis=1)), np.flatnonzero(part_mask.any(axis=0))
    if len(rows) == 0:
        x0 = y0 = x1 = y1 = 0
    else:
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Defect(spec.kind, spec.variant, max(x1 - x0, y1 - y0), (x0, y0, x1, y1), seen=False)


def render_part(seed: int, index: int, defective: bool, **overrides: Any) -> Part:
    """One frame of a tube part; see render_part_with_conditions for the conditions it was rendered under."""
    return render_part_with_conditions(seed, index, defective, **overrides)[0]

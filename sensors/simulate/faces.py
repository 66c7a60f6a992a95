"""Synthetic face identities drawn with Pillow primitives: aligned face crops and scenes with boxes and landmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Point = tuple[float, float]
Box = tuple[float, float, float, float]
Colour = tuple[int, int, int]
FACE_FRAME = 112.0  # identity geometry is in pixels of a 112 x 112 crop; other sizes scale it
SUPERSAMPLE = 2  # drawn at twice the size and downsampled, so edges are anti-aliased


@dataclass(frozen=True)
class GroupParams:
    """How one group's identities are drawn: skin lightness/hue ranges, face shape and hair distributions."""

    lightness: tuple[float, float]  # skin value in [0, 1] (HSV-like), the main difference between groups
    warmth: tuple[float, float]  # red-minus-blue bias of the skin
    face_aspect: tuple[float, float]  # half-height / half-width
    jaw_taper: tuple[float, float]  # 0 square jaw, 1 pointed chin
    hair_styles: tuple[float, ...]  # probabilities of HAIR_STYLES
    hair_palette: tuple[Colour, ...]  # base hair colours, jittered per identity
    beard_rate: float


HAIR_STYLES = ("bald", "short", "long", "fringe", "bun", "curly")
GROUP_PARAMS: dict[str, GroupParams] = {
    "light": GroupParams((0.78, 0.95), (0.05, 0.14), (1.18, 1.38), (0.2, 0.7),
                         (0.08, 0.32, 0.25, 0.15, 0.1, 0.1),
                         ((235, 205, 140), (150, 100, 55), (90, 60, 35), (170, 70, 35), (40, 30, 25)), 0.2),
    "medium": GroupParams((0.62, 0.8), (0.1, 0.2), (1.12, 1.3), (0.1, 0.6),
                          (0.06, 0.3, 0.3, 0.14, 0.12, 0.08),
                          ((60, 40, 28), (35, 25, 20), (95, 65, 40), (20, 18, 16)), 0.25),
    "olive": GroupParams((0.5, 0.68), (0.04, 0.12), (1.2, 1.45), (0.3, 0.8),
                         (0.05, 0.35, 0.3, 0.2, 0.05, 0.05),
                         ((25, 22, 20), (45, 35, 28), (15, 14, 14)), 0.15),
    "dark": GroupParams((0.28, 0.48), (0.08, 0.18), (1.1, 1.3), (0.1, 0.5),
                        (0.15, 0.35, 0.1, 0.05, 0.1, 0.25),
                        ((18, 16, 15), (30, 24, 20), (45, 35, 28)), 0.25),
}
GROUPS: tuple[str, ...] = tuple(GROUP_PARAMS)


@dataclass(frozen=True)
class Identity:
    """One synthetic person: everything that stays the same between their pictures (pixels of a 112 crop)."""

    group: str
    index: int
    face_half_width: float
    face_aspect: float
    jaw_taper: float
    skin: Colour
    eye_half_spacing: float
    eye_y: float
    eye_width: float
    eye_openness: float
    iris: Colour
    brow_thickness: float
    brow_slant: float
    brow_gap: float
    nose_length: float
    nose_width: float
    mouth_half_width: float
    lip_thickness: float
    mouth_y: float
    lip_colour: Colour
    hair_style: str
    hair_colour: Colour
    hairline: float
    ear_size: float
    beard: bool
    mark: Point | None  # a mole, relative to the face centre; None for most people
    age: float  # 0 young .. 1 old: wrinkles and grey hair grow with it


class Landmarks(NamedTuple):
    """Five points as in ArcFace alignment: eye centres, nose tip, mouth corners (x, y)."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _skin_colour(rng: np.random.Generator, params: GroupParams) -> Colour:
    value, warmth = _uniform(rng, params.lightness), _uniform(rng, params.warmth)
    red = value * 255
    green = red * (0.78 - 0.3 * warmth) + rng.normal(0, 4)
    blue = red * (0.62 - 0.6 * warmth) + rng.normal(0, 4)
    return _clip_colour((red, green, blue))


def _clip_colour(rgb: tuple[float, float, float] | np.ndarray) -> Colour:
    r, g, b = (int(np.clip(round(float(c)), 0, 255)) for c in rgb)
    return (r, g, b)


def _sample_identity(rng: np.random.Generator, group: str, index: int) -> Identity:
    params = GROUP_PARAMS[group]
    hair_base = np.array(params.hair_palette[rng.integers(len(params.hair_palette))], float)
    irises = ((60, 40, 25), (90, 60, 30), (70, 110, 150), (80, 120, 70), (40, 30, 25))
    return Identity(
        group=group, index=index, face_half_width=_uniform(rng, (26.0, 34.0)),
        face_aspect=_uniform(rng, params.face_aspect), jaw_taper=_uniform(rng, params.jaw_taper),
        skin=_skin_colour(rng, params), eye_half_spacing=_uniform(rng, (14.0, 21.0)),
        eye_y=_uniform(rng, (49.0, 56.0)), eye_width=_uniform(rng, (6.0, 10.0)),
        eye_openness=_uniform(rng, (0.35, 0.65)), iris=irises[rng.integers(len(irises))],
        brow_thickness=_uniform(rng, (1.5, 4.5)), brow_slant=_uniform(rng, (-0.35, 0.35)),
        brow_gap=_uniform(rng, (5.0, 10.0)), nose_length=_uniform(rng, (12.0, 22.0)),
        nose_width=_uniform(rng, (5.0, 11.0)), mouth_half_width=_uniform(rng, (9.0, 17.0)),
        lip_thickness=_uniform(rng, (1.5, 5.0)), mouth_y=_uniform(rng, (77.0, 85.0)),
        lip_colour=_clip_colour(np.array(_skin_colour(rng, params)) * [0.85, 0.55, 0.55]),
        hair_style=HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=np.array(params.hair_styles) / sum(params.hair_styles))],
        hair_colour=_clip_colour(hair_base * rng.uniform(0.75, 1.25) + rng.normal(0, 6, 3)),
        hairline=_uniform(rng, (18.0, 30.0)), ear_size=_uniform(rng, (5.0, 10.0)),
        beard=bool(rng.random() < params.beard_rate),
        mark=(_uniform(rng, (-18, 18)), _uniform(rng, (0, 25))) if rng.random() < 0.3 else None,
        age=_uniform(rng, (0.0, 1.0)),
    )


def sample_identities(count: int, seed: int, groups: tuple[str, ...] = GROUPS) -> list[Identity]:
    """``count`` identities, round-robin over ``groups`` (balanced to within one), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return [_sample_identity(rng, groups[i % len(groups)], i) for i in range(count)]


@dataclass(frozen=True)
class Nuisance:
    """What changes between two pictures of the same person."""

    yaw: float
    roll: float
    scale: float
    shift: Point
    smile: float
    blink: float
    brow_raise: float
    light_angle: float
    light_strength: float
    brightness: float
    tint: tuple[float, float, float]
    blur: float
    noise: float
    extra_age: float
    glasses: bool
    mask: bool
    background: Colour


def _float3(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Pose, expression, light, camera and accessories for one picture."""
    return Nuisance(
        yaw=float(rng.uniform(-0.45, 0.45)), roll=float(rng.uniform(-12, 12)), scale=float(rng.uniform(0.92, 1.08)),
        shift=(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))), smile=float(rng.uniform(-0.4, 1.0)),
        blink=float(rng.uniform(0.0, 1.0) ** 3), brow_raise=float(rng.uniform(-2.5, 2.5)),
        light_angle=float(rng.uniform(0, 2 * math.pi)), light_strength=float(rng.uniform(0.0, 0.7)),
        brightness=float(rng.uniform(0.6, 1.3)), tint=_float3(rng.uniform(0.88, 1.12, 3)),
        blur=float(rng.uniform(0, 1.6) ** 1.5), noise=float(rng.uniform(0, 12)),
        extra_age=float(rng.uniform(-0.15, 0.3)), glasses=bool(rng.random() < 0.15), mask=bool(rng.random() < 0.1),
        background=_clip_colour(rng.uniform(30, 230, 3)),
    )


class _Projector:
    """Maps face-frame points with a depth (x, y, z) to canvas pixels through yaw, roll, scale and shift."""

    def __init__(self, identity: Identity, nuisance: Nuisance, size: int, origin: Point = (0.0, 0.0)) -> None:
        self.half_width = identity.face_half_width
        self.half_height = identity.face_half_width * identity.face_aspect
        self.factor = size / FACE_FRAME * SUPERSAMPLE * nuisance.scale
        self.yaw, self.roll = nuisance.yaw, math.radians(nuisance.roll)
        self.centre = (size / 2 * SUPERSAMPLE + origin[0], size / 2 * SUPERSAMPLE + origin[1])
        self.shift = (nuisance.shift[0] * SUPERSAMPLE * size / FACE_FRAME,
                      nuisance.shift[1] * SUPERSAMPLE * size / FACE_FRAME)

    def surface_depth(self, x: float, y: float) -> float:
        """Depth of the head's surface (an ellipsoid) under a face-frame point relative to the centre."""
        inside = 1.0 - (x / (self.half_width * 1.05)) ** 2 - (y / (self.half_height * 1.05)) ** 2
        return 0.7 * self.half_width * math.sqrt(max(inside, 0.0))

    def __call__(self, x: float, y: float, lift: float = 0.0, on_surface: bool = True) -> Point:
        """Canvas point of face-frame (x, y) (centre-relative), ``lift`` above the surface."""
        z = (self.surface_depth(x, y) if on_surface else 0.0) + lift
        x_turned = x * math.cos(self.yaw) + z * math.sin(self.yaw)
        cos_r, sin_r = math.cos(self.roll), math.sin(self.roll)
        x_rolled, y_rolled = x_turned * cos_r - y * sin_r, x_turned * sin_r + y * cos_r
        return (self.centre[0] + self.shift[0] + self.factor * x_rolled,
                self.centre[1] + self.shift[1] + self.factor * y_rolled)

    def many(self, points: list[Point], lift: float = 0.0, on_surface: bool = True) -> list[Point]:
        return [self(x, y, lift, on_surface) for x, y in points]

    def width(self, pixels: float) -> int:
        return max(1, round(pixels * self.factor))


def _ellipse(cx: float, cy: float, rx: float, ry: float, count: int = 28,
             start: float = 0.0, stop: float = 2 * math.pi) -> list[Point]:
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(start, stop, count)]


class _Painter:
    """Draws every primitive on the colour canvas and, in white, on the coverage mask used to paste faces."""

    def __init__(self, image: Image.Image, mask: Image.Image) -> None:
        self.draw, self.mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)

    def polygon(self, points: list[Point], colour: Colour) -> None:
        self.draw.polygon(points, fill=colour)
        self.mask.polygon(points, fill=255)

    def line(self, points: list[Point], colour: Colour, width: int) -> None:
        self.draw.line(points, fill=colour, width=width, joint="curve")
        self.mask.line(points, fill=255, width=width)


def _face_outline(identity: Identity) -> list[Point]:
    """Face-frame outline, centre-relative: an ellipse whose lower half narrows towards the chin."""
    a, b = identity.face_half_width, identity.face_half_width * identity.face_aspect
    points = []
    for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
        narrowing = 1.0 - 0.35 * identity.jaw_taper * max(0.0, math.sin(t)) ** 2
        points.append((a * math.cos(t) * narrowing, b * math.sin(t)))
    return points


def _mix(colour: Colour, other: Colour, share: float) -> Colour:
    return _clip_colour(np.array(colour, float) * (1 - share) + np.array(other, float) * share)


def _draw_hair(paint: _Painter, project: _Projector, identity: Identity, colour: Colour, behind: bool) -> None:
    a, b = identity.face_half_width, identity.face_half_width * identity.face_aspect
    style = identity.hair_style
    if style == "bald":
        return
    if behind:
        if style == "long":
            back = [(-a - 6, -b * 0.3), (-a - 8, b * 1.1), (a + 8, b * 1.1), (a + 6, -b * 0.3)]
            paint.polygon(project.many(back, on_surface=False), colour)
        return
    top_y = identity.hairline - 56.0  # hairline in frame pixels -> centre-relative
    if style == "fringe":
        top_y += 10
    bumps = 3.0 if style == "curly" else 0.0
    outer = [(x * (1 + bumps / a * math.sin(6 * t) ** 2), y - 3 - bumps * abs(math.sin(6 * t)))
             for t, (x, y) in zip(np.linspace(math.pi, 2 * math.pi, 24),
                                  _ellipse(0, 0, a + 3, b + 4, 24, math.pi, 2 * math.pi), strict=True)]
    sides = b * (0.1 if style in ("short", "curly", "fringe") else 0.35)
    inner = [(a + 1, sides), (a * 0.8, top_y + 6), (0, top_y), (-a * 0.8, top_y + 6), (-a - 1, sides)]
    paint.polygon(project.many([(-a - 1, sides), *outer, *inner], on_surface=False), colour)
    if style == "bun":
        paint.polygon(project.many(_ellipse(0, -b - 8, 9, 7), on_surface=False), colour)


def _draw_eyes(paint: _Painter, project: _Projector, identity: Identity, nuisance: Nuisance,
               skin_dark: Colour) -> list[Point]:
    centres = []
    brow_colour = _mix(identity.hair_colour, (20, 15, 10), 0.4)
    for side in (-1, 1):
        cx, cy = side * identity.eye_half_spacing, identity.eye_y - 56.0
        openness = identity.eye_openness * (1 - 0.9 * nuisance.blink) * (1 - 0.25 * max(nuisance.smile, 0))
        w, h = identity.eye_width, identity.eye_width * openness
        paint.polygon(project.many(_ellipse(cx, cy, w, max(h, 0.4))), (235, 232, 225))
        if h > 1.0:
            paint.polygon(project.many(_ellipse(cx, cy, min(h, w * 0.45), min(h, w * 0.45), 16)), identity.iris)
            paint.polygon(project.many(_ellipse(cx, cy, h * 0.35, h * 0.35, 12)), (15, 12, 10))
        paint.line(project.many(_ellipse(cx, cy, w, max(h, 0.4), 14, math.pi, 2 * math.pi)), skin_dark,
                   project.width(1.0))
        brow_y = cy - identity.brow_gap - nuisance.brow_raise
        slant = side * identity.brow_slant * w
        brow = [(cx - w * 1.1, brow_y + slant), (cx, brow_y - 1.5), (cx + w * 1.1, brow_y - slant)]
        paint.line(project.many(brow, lift=0.5), brow_colour, project.width(identity.brow_thickness))
        centres.append(project(cx, cy))
    return centres


def _draw_nose_mouth(paint: _Painter, project: _Projector, identity: Identity, nuisance: Nuisance,
                     skin_dark: Colour) -> tuple[Point, Point, Point]:
    top = identity.eye_y - 56.0
    tip_y = top + identity.nose_length
    half = identity.nose_width / 2
    bridge = [(0, top), (-half * 0.3, tip_y - 2), (-half, tip_y), (0, tip_y + 2), (half, tip_y)]
    paint.line(project.many(bridge, lift=4.0), skin_dark, project.width(1.3))
    nose = project(0, tip_y, lift=6.0)
    y, w = identity.mouth_y - 56.0, identity.mouth_half_width * (1 + 0.15 * nuisance.smile)
    curve = -3.0 * nuisance.smile
    lips = identity.lip_thickness
    opening = max(0.0, nuisance.smile - 0.5) * 4
    upper = [(x, y + curve * (1 - (x / w) ** 2) * -1 - lips * (1 - (x / w) ** 2)) for x in np.linspace(-w, w, 12)]
    lower = [(x, y - curve * (1 - (x / w) ** 2) + (lips + opening) * (1 - (x / w) ** 2))
             for x in np.linspace(w, -w, 12)]
    paint.polygon(project.many(upper + lower, lift=1.0), identity.lip_colour)
    middle = [(x, y - curve * (1 - (x / w) ** 2)) for x in np.linspace(-w, w, 12)]
    paint.line(project.many(middle, lift=1.2), _mix(identity.lip_colour, (30, 10, 10), 0.6),
               project.width(0.8 + opening))
    return nose, project(-w, y), project(w, y)


def _draw_age_and_marks(paint: _Painter, project: _Projector, identity: Identity, age: float,
                        skin_dark: Colour) -> None:
    b = identity.face_half_width * identity.face_aspect
    for k in range(int(age * 4)):
        y = -b * 0.55 + 3 * k
        paint.line(project.many([(-10, y), (0, y - 1), (10, y)]), _mix(skin_dark, identity.skin, 0.4),
                   project.width(0.6))
    if age > 0.6:
        for side in (-1, 1):
            x = side * (identity.eye_half_spacing + identity.eye_width + 2)
            paint.line(project.many([(x, identity.eye_y - 58), (x + side * 3, identity.eye_y - 55)]), skin_dark,
                       project.width(0.6))
    if identity.mark is not None:
        paint.polygon(project.many(_ellipse(*identity.mark, 1.3, 1.3, 10), lift=0.2), (60, 40, 30))


def _draw_accessories(paint: _Painter, project: _Projector, identity: Identity, nuisance: Nuisance,
                      beard_colour: Colour) -> None:
    a, b = identity.face_half_width, identity.face_half_width * identity.face_aspect
    if identity.beard:
        chin = [(x * 0.92, y) for x, y in _face_outline(identity) if y > b * 0.15]
        mouth_y = identity.mouth_y - 56.0
        paint.polygon(project.many([*chin, (-a * 0.5, mouth_y + 4), (a * 0.5, mouth_y + 4)], lift=0.5), beard_colour)
    if nuisance.glasses:
        for side in (-1, 1):
            rim = _ellipse(side * identity.eye_half_spacing, identity.eye_y - 56.0, identity.eye_width + 3, 7)
            paint.line(project.many(rim, lift=3.0), (25, 25, 30), project.width(1.2))
        bridge = [(-identity.eye_half_spacing + identity.eye_width + 3, identity.eye_y - 57),
                  (identity.eye_half_spacing - identity.eye_width - 3, identity.eye_y - 57)]
        paint.line(project.many(bridge, lift=6.0), (25, 25, 30), project.width(1.2))
    if nuisance.mask:
        top = identity.eye_y - 56.0 + identity.nose_length * 0.6
        cover = [(-a * 0.95, top), (a * 0.95, top), (a * 0.8, b * 0.75), (0, b * 0.95), (-a * 0.8, b * 0.75)]
        paint.polygon(project.many(cover, lift=2.0), (200, 210, 225))


def _paint_face(canvas: Image.Image, mask: Image.Image, identity: Identity, nuisance: Nuisance, size: int,
                origin: Point = (0.0, 0.0)) -> tuple[Landmarks, Box]:
    """Draw one face on ``canvas`` (and its coverage on ``mask``); return landmarks and box in canvas pixels."""
    project = _Projector(identity, nuisance, size, origin)
    paint = _Painter(canvas, mask)
    age = float(np.clip(identity.age + nuisance.extra_age, 0, 1))
    hair = _mix(identity.hair_colour, (190, 190, 190), max(0.0, age - 0.55) * 1.6)
    skin_dark = _mix(identity.skin, (40, 20, 10), 0.35)
    a, b = identity.face_half_width, identity.face_half_width * identity.face_aspect
    _draw_hair(paint, project, identity, hair, behind=True)
    paint.polygon(project.many([(-a * 0.45, b * 0.6), (-a * 0.5, b * 1.6), (a * 0.5, b * 1.6), (a * 0.45, b * 0.6)],
                               on_surface=False), skin_dark)
    for side in (-1, 1):
        ear = _ellipse(side * a * 0.98, identity.eye_y - 56.0 + 6, identity.ear_size * 0.55, identity.ear_size)
        paint.polygon(project.many(ear, on_surface=False), _mix(identity.skin, skin_dark, 0.3))
    outline = project.many(_face_outline(identity), on_surface=False)
    paint.polygon(outline, identity.skin)
    _draw_age_and_marks(paint, project, identity, age, skin_dark)
    left, right = _draw_eyes(paint, project, identity, nuisance, skin_dark)
    nose, mouth_left, mouth_right = _draw_nose_mouth(paint, project, identity, nuisance, skin_dark)
    _draw_accessories(paint, project, identity, nuisance, hair)
    _draw_hair(paint, project, identity, hair, behind=False)
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    box = (min(xs), min(ys), max(xs), max(ys))
    return Landmarks(left, right, nose, mouth_left, mouth_right), box


def _light_and_camera(pixels: np.ndarray, nuisance: Nuisance, rng: np.random.Generator,
                      blur_scale: float = 1.0) -> np.ndarray:
    """Directional light falloff, brightness and colour cast, then blur and sensor noise."""
    height, width = pixels.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    direction = (math.cos(nuisance.light_angle), math.sin(nuisance.light_angle))
    ramp = ((xs - width / 2) * direction[0] + (ys - height / 2) * direction[1]) / max(width, height)
    gain = (1 + 2 * nuisance.light_strength * ramp) * nuisance.brightness
    lit = pixels.astype(np.float32) * gain[..., None] * np.array(nuisance.tint, np.float32)
    image = Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))
    if nuisance.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(nuisance.blur * blur_scale))
    noisy = np.asarray(image, np.float32) + rng.normal(0, nuisance.noise, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render_face(identity: Identity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """An aligned (size, size, 3) uint8 face crop of ``identity`` with freshly drawn pose, light and accessories."""
    nuisance = sample_nuisance(rng)
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), nuisance.background)
    _paint_face(canvas, Image.new("L", (big, big), 0), identity, nuisance, size)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS))
    return _light_and_camera(small, nuisance, rng, size / FACE_FRAME)


def crop_template(count: int = 400, seed: int = 0) -> np.ndarray:
    """Where :func:`render_face` puts the five landmarks of its 112 x 112 crops on average (5 x 2 pixels): the
    alignment template of an embedder trained on them (the mouth sits higher than in the ArcFace template)."""
    rng = np.random.default_rng(seed)
    big = int(FACE_FRAME) * SUPERSAMPLE
    marks = [_paint_face(Image.new("RGB", (big, big)), Image.new("L", (big, big)), identity, sample_nuisance(rng),
                         int(FACE_FRAME))[0] for identity in sample_identities(count, seed)]
    return np.round(np.mean(np.asarray(marks, dtype=np.float64), axis=0) / SUPERSAMPLE, 2)


def _scene_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A factory-ish backdrop: a vertical gradient with a few flat panels and bars."""
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    share = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - share) + bottom * share) * np.ones((1, width, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(20, width / 2), rng.uniform(10, height / 2)
        draw.rectangle((x, y, x + w, y + h), fill=_clip_colour(rng.uniform(20, 235, 3)))
    return image


def _free_spot(rng: np.random.Generator, taken: list[Box], side: int,
               width: int, height: int) -> tuple[float, float] | None:
    """A top-left corner for a ``side`` px square that overlaps no box in ``taken`` (None after 30 tries)."""
    for _ in range(30):
        x, y = float(rng.uniform(0, width - side)), float(rng.uniform(0, height - side))
        if all(x + side < x0 or x1 < x or y + side < y0 or y1 < y for x0, y0, x1, y1 in taken):
            return x, y
    return None


def render_scene(identities: list[Identity], rng: np.random.Generator, width: int = 640,
                 height: int = 480) -> tuple[np.ndarray, list[tuple[Box, Landmarks]]]:
    """A (height, width, 3) frame with each identity's face (sizes 24-180 px, not overlapping, some dropped
    when there is no room), and per placed face its box (x0, y0, x1, y1) and five landmarks in pixels."""
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    canvas = _scene_background(rng, width, height).resize(big)
    taken: list[Box] = []
    faces: list[tuple[Box, Landmarks]] = []
    for identity in identities:
        side = int(rng.uniform(24, min(180, width, height) + 1))
        spot = _free_spot(rng, taken, side, width, height)
        if spot is None:
            continue
        taken.append((spot[0], spot[1], spot[0] + side, spot[1] + side))
        faces.append(_paste_face(canvas, identity, sample_nuisance(rng), side, spot))
    small = np.asarray(canvas.resize((width, height), Image.Resampling.LANCZOS))
    return _light_and_camera(small, replace(sample_nuisance(rng), light_strength=0.3), rng), faces


def _paste_face(canvas: Image.Image, identity: Identity, nuisance: Nuisance, side: int,
                spot: Point) -> tuple[Box, Landmarks]:
    """Paint a ``side`` px face with its top-left corner at ``spot`` (frame pixels) onto the supersampled
    ``canvas``; its box (clipped to the frame) and landmarks in frame pixels."""
    big = canvas.size
    layer = Image.new("RGB", big)
    coverage = Image.new("L", big, 0)
    origin = (spot[0] * SUPERSAMPLE, spot[1] * SUPERSAMPLE)
    marks, box = _paint_face(layer, coverage, identity, nuisance, side, origin)
    canvas.paste(layer, (0, 0), coverage)
    width, height = big[0] / SUPERSAMPLE, big[1] / SUPERSAMPLE
    x0, y0, x1, y1 = (v / SUPERSAMPLE for v in box)
    x0, x1 = max(0.0, x0), min(width, x1)  # a tilted face may poke past the frame edge
    y0, y1 = max(0.0, y0), min(height, y1)
    return (x0, y0, x1, y1), Landmarks(*[(x / SUPERSAMPLE, y / SUPERSAMPLE) for x, y in marks])


@dataclass(frozen=True)
class Placement:
    """One face in a frame of a scripted scene: who, in which pose and light, how big, and where."""

    identity: Identity
    nuisance: Nuisance
    side: int
    spot: Point  # top-left corner of the face's square, frame pixels


def scene_backdrop(rng: np.random.Generator, width: int = 640, height: int = 480) -> Image.Image:
    """A fixed camera's backdrop, supersampled as :func:`render_frame` wants it."""
    return _scene_background(rng, width, height).resize((width * SUPERSAMPLE, height * SUPERSAMPLE))


def render_frame(backdrop: Image.Image, placements: list[Placement], rng: np.random.Generator,
                 light: Nuisance | None = None) -> tuple[np.ndarray, list[tuple[Box, Landmarks]]]:
    """A frame of a scripted scene (faces placed by the caller, so a person can walk across frames): the
    (height, width, 3) image and each placement's box and landmarks, in order."""
    canvas = backdrop.copy()
    faces = [_paste_face(canvas, p.identity, p.nuisance, p.side, p.spot) for p in placements]
    width, height = canvas.size[0] // SUPERSAMPLE, canvas.size[1] // SUPERSAMPLE
    small = np.asarray(canvas.resize((width, height), Image.Resampling.LANCZOS))
    camera = light if light is not None else replace(sample_nuisance(rng), light_strength=0.3)
    return _light_and_camera(small, camera, rng), faces

"""Synthetic inspection data: camera frames of tube parts with defects, masks, splits and label noise.

Every frame is a pure function of (seed, split, index): ``PartGenerator(seed).part(split, i)``
renders the same pixels on every machine.  ``conditions="broad"`` (the default) draws poses up
to +-30 deg, strong bends, cut ends, parts across the frame border, backlit and dark-field
lighting (about half each), blur, exposure, noise, JPEG, dust and specular glints;
``conditions="narrow"`` renders exactly the frames of the 1.0 generator (backlit, +-10 deg,
the tube always spanning the frame).  Whether a part is defective (and whether its
human label is wrong) is drawn from a separate random stream, so samplers can ask for
labels without rendering.  The held-out splits ("test", "demo") also draw defect sizes and
shapes that the training distribution never shows; only "train" carries label noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from sensors.simulate import tube as render
from sensors.simulate.tube import DEFECT_KINDS, HEIGHT, WIDTH, Kink, Patch, Scene, Tube

CONDITIONS = ("broad", "narrow")
SPLITS = {"train": 0, "val": 1, "test": 2, "demo": 3}
HELD_OUT = frozenset({"test", "demo"})
SIZE_BUCKETS = ((0, 6, "tiny <6px"), (6, 15, "small 6-15px"), (15, 40, "medium 15-40px"),
                (40, 10_000, "large >=40px"))


@dataclass(frozen=True)
class LabelNoise:
    """How often the human label is wrong in the training split."""

    false_reject: float = 0.003  # a good part marked defective (a reflection painted as a defect)
    missed: float = 0.05  # a defective part marked good


@dataclass(frozen=True)
class Defect:
    """One defect's ground truth: kind, shape variant, size (largest mask extent) and box."""

    kind: str
    variant: str
    size_px: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels
    seen: bool  # drawn from the training distribution of sizes and shapes

    @property
    def size_bucket(self) -> str:
        return next(name for low, high, name in SIZE_BUCKETS if low <= self.size_px < high)


@dataclass
class Part:
    """One rendered frame with its ground truth and its (possibly wrong) human label."""

    split: str
    index: int
    image: np.ndarray  # (HEIGHT, WIDTH) uint8 grayscale
    mask: np.ndarray  # (HEIGHT, WIDTH) bool, union of all defect masks
    defects: list[Defect] = field(default_factory=list)
    label: bool = False  # what the labeller said: True = defective
    annotation: np.ndarray | None = None  # the labeller's painted region (== mask unless noisy)
    nuisances: list[tuple[int, int]] = field(default_factory=list)  # (y, x) of dust, glints, cut ends: not defects
    scene: Scene | None = None  # imaging conditions (lighting, pose, cut ends, border, blur, JPEG)

    @property
    def defective(self) -> bool:
        return bool(self.defects)

    @property
    def part_id(self) -> str:
        return f"{self.split}-{self.index:06d}"


@dataclass(frozen=True)
class DefectSpec:
    """What to draw before it is placed: kind, variant, one size parameter."""

    kind: str
    variant: str
    size: float
    seen: bool


SEEN = {"scratch": ("curve", 10, 45), "bubble": ("round", 2.5, 7), "spot": ("blob", 1.2, 4),
        "kink": ("fold", 3, 8)}
UNSEEN = {
    "scratch": (("curve", 4, 9), ("curve", 45, 90), ("zigzag", 15, 45)),
    "bubble": (("round", 1.2, 2.5), ("round", 7, 12), ("elongated", 2.5, 5), ("cluster", 6, 12)),
    "spot": (("blob", 0.6, 1.2), ("blob", 4, 7), ("ring", 1.5, 4), ("speckle", 6, 12)),
    "kink": (("fold", 1.5, 3), ("fold", 8, 14), ("constriction", 0.2, 0.4)),
}
KIND_WEIGHTS = np.array([0.3, 0.25, 0.3, 0.15])


def draw_spec(rng: np.random.Generator, held_out: bool) -> DefectSpec:
    """A defect kind and size; held-out splits draw 40% from sizes and shapes unseen in training."""
    kind = str(rng.choice(DEFECT_KINDS, p=KIND_WEIGHTS))
    if held_out and rng.random() < 0.4:
        options = UNSEEN[kind]
        variant, low, high = options[rng.integers(len(options))]
        return DefectSpec(kind, variant, float(rng.uniform(low, high)), seen=False)
    variant, low, high = SEEN[kind]
    return DefectSpec(kind, variant, float(rng.uniform(low, high)), seen=True)


@cache
def full_grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def visible_along(tube: Tube, margin: float) -> tuple[float, float]:
    """Range of axis positions whose centre point lies inside the frame (with a margin)."""
    cos = np.cos(tube.angle)
    return (margin - tube.cx) / cos, (WIDTH - margin - tube.cx) / cos


def place(rng: np.random.Generator, tube: Tube) -> tuple[float, float, float]:
    """A random (along, y, x) on the part, away from the walls and the frame border."""
    low, high = visible_along(tube, 40)
    if tube.ends is not None:
        low, high = max(low, tube.ends[0] + 25), min(high, tube.ends[1] - 25)
        if low >= high:
            return 0.5 * (tube.ends[0] + tube.ends[1]), *tube.point(0.5 * (tube.ends[0] + tube.ends[1]), 0.0)
    for _ in range(50):
        along = rng.uniform(low, high)
        y, x = tube.point(along, rng.uniform(-0.7, 0.7))
        if 12 <= y < HEIGHT - 12 and 12 <= x < WIDTH - 12:
            return along, y, x
    if tube.ends is not None or abs(tube.cy - HEIGHT / 2) + tube.radius > HEIGHT / 2:
        # a part mostly outside the frame (broad conditions): the first in-frame point of a fine grid
        for along in np.linspace(low, high, 81):
            for t in np.linspace(-0.7, 0.7, 15):
                y, x = tube.point(along, t)
                if 12 <= y < HEIGHT - 12 and 12 <= x < WIDTH - 12:
                    return along, y, x
    return 0.0, tube.cy, tube.cx


def cut_end_points(tube: Tube) -> list[tuple[int, int]]:
    """(y, x) of the corners and the middle of each cut end in the frame: a cut face looks like a crease."""
    points = []
    for end in tube.ends or ():
        if abs(end) > 1e5:
            continue
        for t in (-1.0, 0.0, 1.0):
            y, x = tube.point(end, t)
            if 0 <= y < HEIGHT and 0 <= x < WIDTH:
                points.append((int(y), int(x)))
    return points


def make_kink(rng: np.random.Generator, spec: DefectSpec, along: float) -> Kink:
    if spec.variant == "constriction":
        return Kink(along, rng.uniform(-1, 1), rng.uniform(5, 12), spec.size, 0.0, 0.0)
    return Kink(along, spec.size * rng.choice([-1, 1]), rng.uniform(6, 16), rng.uniform(0.05, 0.2),
                rng.uniform(0.15, 0.4), rng.uniform(-0.4, 0.4))


def make_patches(rng: np.random.Generator, spec: DefectSpec, y: float, x: float) -> list[Patch]:
    if spec.kind == "scratch":
        return [render.scratch(rng, y, x, spec.size, zigzag=spec.variant == "zigzag")]
    if spec.variant == "cluster" or spec.variant == "speckle":
        return render.cluster(rng, y, x, spec.size, spec.kind)
    if spec.kind == "bubble":
        aspect = rng.uniform(2.5, 4) if spec.variant == "elongated" else rng.uniform(1, 1.6)
        return [render.bubble(rng, y, x, spec.size, aspect)]
    return [render.spot(rng, y, x, spec.size, ring=spec.variant == "ring")]


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class PartGenerator:
    """Renders parts of every split deterministically from one seed."""

    def __init__(self, seed: int = 0, defect_rate: float = 0.03, noise: LabelNoise = LabelNoise(),
                 conditions: str = "broad") -> None:
        if conditions not in CONDITIONS:
            raise ValueError(f"conditions must be one of {CONDITIONS}, not {conditions!r}")
        self.seed = seed
        self.defect_rate = defect_rate
        self.noise = noise
        self.conditions = conditions

    def labels(self, split: str, index: int) -> tuple[bool, bool]:
        """(truly defective, human label) of a part, without rendering it."""
        rng = np.random.default_rng([self.seed, SPLITS[split], index, 0])
        defective = bool(rng.random() < self.defect_rate)
        flip = rng.random() < (self.noise.missed if defective else self.noise.false_reject)
        return defective, defective != (flip and split == "train")

    def part(self, split: str, index: int, defective: bool | None = None) -> Part:
        """Render one part; ``defective`` forces the ground truth (the label then follows it)."""
        truth, label = self.labels(split, index)
        if defective is not None and defective != truth:
            truth, label = defective, defective
        rng = np.random.default_rng([self.seed, SPLITS[split], index, 1])
        narrow = self.conditions == "narrow"
        if narrow:
            tube, border, cut, lighting = render.random_tube(rng), False, 0, "backlit"
        else:
            tube, border, cut = render.broad_tube(rng)
            lighting = "darkfield" if rng.random() < 0.5 else "backlit"
        specs = [draw_spec(rng, split in HELD_OUT) for _ in range(rng.choice([1, 2, 3], p=[0.8, 0.15, 0.05]))]
        placed = []
        for spec in specs if truth else []:
            along, y, x = place(rng, tube)
            kink = make_kink(rng, spec, along) if spec.kind == "kink" else None
            tube.kinks.extend([kink] if kink else [])
            placed.append((spec, kink, y, x))
        ys, xs = full_grid()
        if narrow:
            transmission, highlight, inside = render.draw_tube(tube, ys, xs)
            frame = render.backlight(rng, ys, xs) * transmission + highlight
        else:
            absorb, streak, inside = render.structure(tube, ys, xs)
            if lighting == "backlit":
                frame = (render.backlight(rng, ys, xs) * (1 - inside * np.clip(absorb, 0, 0.9))
                         + inside * tube.highlight_gain * streak)
            else:
                frame = render.darkfield(rng, ys, xs, absorb, streak, inside, tube)
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        bright = None if narrow or lighting == "backlit" else rng
        defects = [self._draw(rng, tube, spec, kink, (y, x), (frame, inside, mask), bright)
                   for spec, kink, y, x in placed]
        found = [defect for defect in defects if defect is not None]
        if narrow:
            nuisances = render.dust(rng, frame, inside)
            image, blur, quality = render.finish(rng, frame), 0.0, None
        else:
            nuisances = render.broad_dust(rng, frame, inside, bright=lighting == "darkfield")
            nuisances += render.glints(rng, tube, frame, inside, int(rng.poisson(1.2)))
            nuisances += cut_end_points(tube)
            image, blur, quality = render.finish_broad(rng, frame)
        if truth and not found:  # every defect fell off the frame: rare, the part is good after all
            label = label if split == "train" else False
        annotation = mask if label == bool(found) else self._wrong_annotation(rng, tube, label)
        scene = Scene(self.conditions, lighting, float(np.rad2deg(tube.angle)), cut, border, blur, quality)
        return Part(split, index, image, mask, found, label, annotation, nuisances, scene)

    @staticmethod
    def _draw(rng: np.random.Generator, tube: Tube, spec: DefectSpec, kink: Kink | None,
              at: tuple[float, float], canvas: tuple[np.ndarray, np.ndarray, np.ndarray],
              bright: np.random.Generator | None = None) -> Defect | None:
        """Draw one defect into the frame of ``canvas`` (frame, inside, mask), add its pixels to the mask.

        ``bright`` (dark-field lighting; the random stream) makes patches scatter light: bright,
        with a random gain; kinks glow through their crease and wall lines already."""
        frame, inside, mask = canvas
        own = np.zeros_like(mask)
        if kink is not None:  # already drawn with the tube; only its mask is missing
            y, x = tube.point(kink.along, 0.0)
            y0, x0, ys, xs = render.patch_grid(y, x, 3 * tube.radius)
            own[y0 : y0 + ys.shape[0], x0 : x0 + xs.shape[1]] = render.kink_mask(tube, kink, ys, xs)
        gain = bright.uniform(1.0, 2.0) if bright is not None and kink is None else 1.0
        for patch in [] if kink else make_patches(rng, spec, *at):
            rows = slice(patch.y0, patch.y0 + patch.add.shape[0])
            cols = slice(patch.x0, patch.x0 + patch.add.shape[1])
            add = patch.add if bright is None else gain * np.abs(patch.add)
            frame[rows, cols] += add * inside[rows, cols]
            own[rows, cols] |= patch.mask & (inside[rows, cols] > 0.5)
        box = box_of(own)
        if box is None:
            return None
        mask |= own
        size = max(box[2] - box[0], box[3] - box[1])
        return Defect(spec.kind, spec.variant, size, box, spec.seen)

    @staticmethod
    def _wrong_annotation(rng: np.random.Generator, tube: Tube, label: bool) -> np.ndarray:
        """A labeller's mistake: nothing painted on a defect, or a blob painted on a good part."""
        painted = np.zeros((HEIGHT, WIDTH), dtype=bool)
        if label:
            _, y, x = place(rng, tube)
            radius = rng.uniform(3, 10)
            ys, xs = full_grid()
            painted = (ys - y) ** 2 + (xs - x) ** 2 <= radius**2
        return painted

    def indices(self, split: str, count: int, start: int = 0) -> tuple[list[int], list[int]]:
        """Indices of labelled-defective and labelled-good parts among ``count`` parts of a split."""
        bad: list[int] = []
        good: list[int] = []
        for index in range(start, start + count):
            (bad if self.labels(split, index)[1] else good).append(index)
        return bad, good

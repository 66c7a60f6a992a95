"""Training data of the symbol detector: engraved page sets (cached), degraded crops and DWD's per-pixel targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.symbols import engrave
from models.symbols.degrade import degrade

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class PageSet:
    """Pages of one split, as engraved (clean)."""

    pages: list[engrave.Page]

    def class_counts(self) -> np.ndarray:
        counts = np.zeros(len(engrave.CLASS_NAMES), dtype=np.int64)
        for page in self.pages:
            np.add.at(counts, page.labels, 1)
        return counts


def build_pages(composers: tuple[str, ...], fonts: tuple[str, ...], count: int, seed: int,
                widths: tuple[int, int] = (1250, 1550)) -> PageSet:
    """``count`` pages of random pieces of these composers (a composer drawn first, so the few pieces of
    one do not drown in the hundreds of another), each in a random font and width (staff space about
    11-13 px: DeepScores' pages scaled by 0.5, as DWD trains)."""
    rng = np.random.default_rng(seed)
    pieces = [found for found in (engrave.corpus_pieces((c,)) for c in composers) if found]
    pages: list[engrave.Page] = []
    while len(pages) < count:
        works = pieces[int(rng.integers(len(pieces)))]
        piece = works[int(rng.integers(len(works)))]
        font = fonts[int(rng.integers(len(fonts)))]
        page = engrave.engrave(piece, font, int(rng.integers(1, 3)), int(rng.integers(*widths)))
        if page is not None and len(page.labels) >= 10:
            pages.append(page)
    return PageSet(pages)


def cached_pages(name: str, composers: tuple[str, ...], fonts: tuple[str, ...], count: int,
                 seed: int) -> PageSet:
    """:func:`build_pages`, kept in ``models/symbols/.cache`` (engraving is about a second a page)."""
    path = CACHE / f"{name}-{count}-{seed}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        return PageSet([engrave.Page(stored[f"image{i}"], stored[f"boxes{i}"], stored[f"labels{i}"],
                                     str(stored["sources"][i])) for i in range(len(stored["sources"]))])
    built = build_pages(composers, fonts, count, seed)
    CACHE.mkdir(exist_ok=True)
    arrays = {f"{kind}{i}": getattr(page, attr) for i, page in enumerate(built.pages)
              for kind, attr in (("image", "image"), ("boxes", "boxes"), ("labels", "labels"))}
    np.savez_compressed(path, sources=np.array([p.source for p in built.pages]), **arrays)
    return built


def crop(page: engrave.Page, rng: np.random.Generator, size: int, strength: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A degraded ``size`` square crop of a page, centred on a random object half the time (pages are mostly
    white), with the boxes and labels of the objects whose centres fall inside it."""
    margin = size // 4
    big = size + 2 * margin
    height, width = page.image.shape
    if rng.random() < 0.5 and len(page.boxes):
        box = page.boxes[int(rng.integers(len(page.boxes)))]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        left = int(np.clip(cx - big / 2 + rng.integers(-size // 3, size // 3 + 1), 0, max(width - big, 0)))
        top = int(np.clip(cy - big / 2 + rng.integers(-size // 3, size // 3 + 1), 0, max(height - big, 0)))
    else:
        left, top = int(rng.integers(max(width - big, 1))), int(rng.integers(max(height - big, 1)))
    window = np.full((big, big), 255, dtype=np.uint8)
    piece = page.image[top : top + big, left : left + big]
    window[: piece.shape[0], : piece.shape[1]] = piece
    boxes = page.boxes - np.array([left, top, left, top], dtype=np.float32)
    window, boxes = degrade(window, boxes, rng, strength)
    window = window[margin : margin + size, margin : margin + size]
    boxes = boxes - margin
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = np.all((centres >= 0) & (centres < size), axis=1)
    return window, boxes[inside], page.labels[inside]


def targets(shape: tuple[int, int], boxes: np.ndarray, labels: np.ndarray, levels: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DWD's ground truth: quantised energy (an oval at 0.8x the box, top level at the centre, 0 at the
    edge; at least a few pixels for tiny symbols), the class and the (height, width) of the object each
    pixel belongs to (the one of highest energy where they overlap)."""
    energy = np.zeros(shape, dtype=np.int64)
    best = np.zeros(shape, dtype=np.float32)
    classes = np.zeros(shape, dtype=np.int64)
    sizes = np.zeros((2, *shape), dtype=np.float32)
    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max(0.4 * (x1 - x0), 1.5), max(0.4 * (y1 - y0), 1.5)
        c0, c1 = max(int(np.floor(cx - rx)), 0), min(int(np.ceil(cx + rx)) + 1, shape[1])
        r0, r1 = max(int(np.floor(cy - ry)), 0), min(int(np.ceil(cy + ry)) + 1, shape[0])
        if c0 >= c1 or r0 >= r1:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        closeness = 1.0 - np.sqrt(((cols + 0.5 - cx) / rx) ** 2 + ((rows + 0.5 - cy) / ry) ** 2)
        region = (slice(r0, r1), slice(c0, c1))
        wins = closeness > best[region]
        best[region] = np.where(wins, closeness, best[region])
        level = np.clip(np.ceil(closeness * (levels - 1)), 0, levels - 1).astype(np.int64)
        energy[region] = np.where(wins, level, energy[region])
        classes[region] = np.where(wins, label, classes[region])
        sizes[0][region] = np.where(wins, y1 - y0, sizes[0][region])
        sizes[1][region] = np.where(wins, x1 - x0, sizes[1][region])
    return energy, classes, sizes


def batch(pages: PageSet, rng: np.random.Generator, size: int, count: int, levels: int, strength: float
          ) -> tuple[np.ndarray, ...]:
    """``count`` crops and their targets: images (N, 1, S, S) in [0, 1], energy, class, size (N, 2, S, S)."""
    images, energies, classes, sizes = [], [], [], []
    for _ in range(count):
        page = pages.pages[int(rng.integers(len(pages.pages)))]
        image, boxes, labels = crop(page, rng, size, strength)
        energy, label_map, size_map = targets(image.shape, boxes, labels, levels)
        images.append(image[None].astype(np.float32) / 255.0)
        energies.append(energy)
        classes.append(label_map)
        sizes.append(size_map)
    return np.stack(images), np.stack(energies), np.stack(classes), np.stack(sizes)

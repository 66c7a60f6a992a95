"""Tests of the symbol detector's run-time parts: staff-space estimate, DWD post-processing, page tiling, AP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.symbols.metrics import Matcher, voc_ap
from models.symbols.runtime.pages import PageGeometry, estimate_staff_space, infer_page, tile_starts
from models.symbols.runtime.postprocess import detect

LEVELS, CLASSES = 8, 5


def staves(space: int, width: int = 900, height: int = 1200, line: int = 2) -> np.ndarray:
    page = np.full((height, width), 250, np.uint8)
    for top in range(100, height - 6 * space, 10 * space):
        for k in range(5):
            page[top + k * space : top + k * space + line, 50:-50] = 20
    return page


@pytest.mark.parametrize("space", [9, 12, 17, 30])
def test_the_staff_space_of_drawn_staves_is_found(space: int) -> None:
    assert estimate_staff_space(staves(space)) == pytest.approx(space, abs=0.6)


@pytest.mark.parametrize("space", [18, 35])
def test_big_pages_are_measured_on_a_reduction_at_their_own_scale(space: int) -> None:
    assert estimate_staff_space(staves(space, width=2600, height=3600, line=3)) == pytest.approx(space, abs=1.0)


def test_pages_without_staves_have_no_staff_space() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (400, 400)).astype(np.uint8)
    assert estimate_staff_space(noise) is None
    assert estimate_staff_space(np.full((300, 300), 255, np.uint8)) is None
    assert estimate_staff_space(np.zeros((0, 0), np.uint8)) is None


def head_maps(objects: list[tuple[int, int, int, int, int]], shape: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logit maps that say: these (x0, y0, x1, y1, class) objects, energy highest at their centres."""
    energy = np.zeros((LEVELS, *shape), np.float32)
    energy[0] = 5.0
    classes = np.zeros((CLASSES, *shape), np.float32)
    size = np.zeros((2, *shape), np.float32)
    for x0, y0, x1, y1, label in objects:
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        for r in range(3):
            energy[:, cy - 2 + r : cy + 3 - r, cx - 2 + r : cx + 3 - r] = 0
            energy[3 + r, cy - 2 + r : cy + 3 - r, cx - 2 + r : cx + 3 - r] = 9.0
        classes[label, cy - 2 : cy + 3, cx - 2 : cx + 3] = 6.0
        size[0, cy - 2 : cy + 3, cx - 2 : cx + 3] = np.log(y1 - y0)
        size[1, cy - 2 : cy + 3, cx - 2 : cx + 3] = np.log(x1 - x0)
    return energy, classes, size


def test_post_processing_finds_each_component_with_its_class_centre_and_size() -> None:
    energy, classes, size = head_maps([(10, 10, 20, 30, 1), (50, 40, 60, 46, 3)], (64, 80))
    found = detect(energy, classes, size)
    order = np.argsort(found.centres[:, 0])
    assert found.labels[order].tolist() == [1, 3]
    np.testing.assert_allclose(found.boxes[order], [[10, 10, 20, 30], [50, 40, 60, 46]], atol=1.0)
    assert np.all(found.scores > 0.5)


def test_post_processing_of_an_empty_map_finds_nothing() -> None:
    energy, classes, size = head_maps([], (32, 32))
    assert len(detect(energy, classes, size)) == 0


@given(st.integers(16, 2000), st.integers(64, 600), st.integers(0, 30))
@settings(max_examples=200, deadline=None)
def test_tiles_cover_the_axis_and_end_at_its_border(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(length - tile, 0)
    assert all(b - a <= tile - 2 * overlap for a, b in itertools.pairwise(starts))


def test_a_page_of_symbols_comes_back_once_each_across_tile_borders() -> None:
    """Squares all over a page larger than a tile, many cut by tile borders: each found exactly once."""
    rng = np.random.default_rng(3)
    page = np.full((700, 1000), 255, np.uint8)
    truth = []
    for gx in range(5, 980, 45):  # a jittered grid: no two squares touch, many straddle tile borders
        for gy in range(5, 680, 45):
            x, y = gx + int(rng.integers(0, 20)), gy + int(rng.integers(0, 20))
            page[y : y + 10, x : x + 10] = 0
            truth.append((x, y, x + 10, y + 10))

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        maps = []
        for tile in tiles[:, 0]:
            ink = tile < 0.5
            energy = np.zeros((LEVELS, *tile.shape), np.float32)
            energy[0] = np.where(ink, 0.0, 5.0)
            energy[LEVELS - 1] = np.where(ink, 5.0, 0.0)
            maps.append((energy, np.zeros((CLASSES, *tile.shape), np.float32),
                         np.full((2, *tile.shape), np.log(10.0), np.float32)))
        return tuple(np.stack(parts) for parts in zip(*maps, strict=True))  # type: ignore[return-value]

    result = infer_page(run, page, PageGeometry(tile=256, overlap=32), known_staff_space=12.0)
    assert result.tiles > 6
    matcher = Matcher(1)
    matcher.add(np.asarray(truth, np.float32), np.zeros(len(truth), np.int64), result.detections.boxes,
                result.detections.labels, result.detections.scores)
    assert len(result.detections) == len(truth)
    assert all(hit for _, hit, _ in matcher.scored[0]), "a symbol came back twice or cut"


def test_pages_are_read_at_the_trained_staff_space() -> None:
    seen: list[tuple[int, ...]] = []

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seen.append(tiles.shape)
        n, _, h, w = tiles.shape
        return np.zeros((n, LEVELS, h, w), np.float32), np.zeros((n, CLASSES, h, w), np.float32), \
            np.zeros((n, 2, h, w), np.float32)

    result = infer_page(run, staves(24, width=1200, height=1600), PageGeometry(staff_space=12.0, tile=512))
    assert result.staff_space == pytest.approx(24, abs=0.6)
    assert result.scale == pytest.approx(0.5, abs=0.02)
    assert result.tiles == sum(s[0] for s in seen)
    assert len(result.detections) == 0


def test_average_precision_of_known_rankings() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    matcher = Matcher(2)
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    # one exact hit ranked first, one false alarm ranked second, the second truth missed: AP 0.5
    matcher.add(truth, np.array([0, 0]), np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
                np.array([0, 0]), np.array([0.9, 0.8], np.float32))
    assert matcher.average_precision(0) == pytest.approx(0.5)
    assert matcher.average_precision(1) is None
    assert matcher.mean_ap() == pytest.approx(0.5)
    # a detection of the right place but the wrong class counts in the confusion table, not as a hit
    other = Matcher(2)
    other.add(truth[:1], np.array([0]), truth[:1], np.array([1]), np.array([0.9], np.float32))
    assert other.average_precision(0) == 0.0
    assert other.confusion.tolist() == [[0, 1], [0, 0]]

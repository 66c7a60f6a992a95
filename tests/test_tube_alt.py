"""Tests of the independent tube renderer (tube_alt): determinism, ground truth, coverage and defect pixels."""

from __future__ import annotations

import numpy as np
import pytest

from sensors.simulate.tube_alt import CONDITION_KEYS, render_part, render_part_with_conditions
from sensors.simulate.tube_alt_defects import KINDS

SEED = 7


@pytest.fixture(scope="module")
def conditions() -> list[dict]:
    """The conditions of 40 indices (good parts, rendered once for the whole module)."""
    return [render_part_with_conditions(SEED, i, False)[1] for i in range(40)]


def test_deterministic() -> None:
    """Same (seed, index): same pixels, mask, defects and nuisances; another seed renders another frame."""
    first, again = render_part(SEED, 3, True), render_part(SEED, 3, True)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert first.defects == again.defects and first.nuisances == again.nuisances
    assert not np.array_equal(first.image, render_part(SEED + 1, 3, True).image)


def test_frame_format_and_conditions() -> None:
    part, cond = render_part_with_conditions(SEED, 0, True)
    assert part.image.dtype == np.uint8 and part.image.shape == (480, 640)
    assert part.mask.dtype == bool and part.mask.shape == (480, 640)
    assert part.split == "alt" and part.label is True
    assert set(CONDITION_KEYS) <= set(cond)
    assert cond["lighting"] in ("backlit", "darkfield") and 60 <= cond["jpeg_quality"] <= 95


def test_good_parts_are_clean() -> None:
    for i in range(4):
        part = render_part(SEED, i, False)
        assert not part.mask.any() and part.defects == [] and part.label is False


@pytest.mark.parametrize("index", range(6))
def test_defective_ground_truth(index: int) -> None:
    """1-3 defects with in-frame boxes, non-empty masks that agree with the boxes, and pixels that changed."""
    bad, good = render_part(SEED, index, True), render_part(SEED, index, False)
    assert 1 <= len(bad.defects) <= 3 and bad.mask.any()
    assert good.nuisances == bad.nuisances
    np.testing.assert_array_equal(bad.annotation, bad.mask)
    for defect in bad.defects:
        x0, y0, x1, y1 = defect.box
        assert defect.kind in KINDS and not defect.seen
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        assert bad.mask[y0:y1, x0:x1].any() and defect.size_px == max(x1 - x0, y1 - y0)
    diff = np.abs(bad.image.astype(int) - good.image.astype(int))
    assert diff[bad.mask].max() >= 10
    assert diff[bad.mask].mean() > 2.0 * diff[~bad.mask].mean() + 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_its_pixels(kind: str) -> None:
    bad, good = render_part(SEED, 11, True, kinds=(kind,)), render_part(SEED, 11, False)
    assert [d.kind for d in bad.defects] == [kind]
    diff = np.abs(bad.image.astype(int) - good.image.astype(int))
    assert diff[bad.mask].max() >= 10


def test_conditions_cover_the_ranges(conditions: list[dict]) -> None:
    """Both lightings, poses beyond +-20 degrees, straight and curved tubes, frames cut by the border."""
    assert {c["lighting"] for c in conditions} == {"backlit", "darkfield"}
    angles = [c["angle_deg"] for c in conditions]
    assert min(angles) < -20 and max(angles) > 20 and all(-30 <= a <= 30 for a in angles)
    assert any(c["curvature"] == 0 for c in conditions) and any(c["curvature"] != 0 for c in conditions)
    assert 3 <= sum(c["crosses_border"] for c in conditions) <= 25
    widths = [c["width_px"] for c in conditions]
    assert min(widths) < 60 and max(widths) > 110


def test_overrides() -> None:
    part, cond = render_part_with_conditions(SEED, 2, False, lighting="darkfield", crosses_border=True, angle_deg=25.0)
    assert cond["lighting"] == "darkfield" and cond["crosses_border"] and cond["angle_deg"] == 25.0
    assert np.median(part.image) < 60  # a dark background
    _, cond = render_part_with_conditions(SEED, 2, False, lighting="backlit", crosses_border=False)
    assert cond["lighting"] == "backlit" and not cond["crosses_border"]
    with pytest.raises(ValueError):
        render_part(SEED, 2, False, colour="red")

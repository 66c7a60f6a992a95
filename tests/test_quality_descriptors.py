"""Tests of the stations' cell descriptors: the heat map's grid, pose independence, and a station that finds defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import structlog
from scipy import ndimage

from agent.tasks.base import TaskContext
from agent.tasks.quality.config import QualityConfig
from agent.tasks.quality.task import QualityTask
from models.quality.runtime.descriptors import SIZE, cell_descriptors
from models.quality.runtime.station import StationLearner, StationSettings
from models.quality.runtime.tiling import TileGeometry
from models.runtime import load_model
from sensors.simulate.tube_alt import place, render_part_with_conditions
from sensors.wire import Kind, SensorMessage

#: columns of the largest magnitude along and across the axis, at 2 and 4 px (after 4 of context, then mean, max)
ALONG_MAX = [5, 11]
ACROSS_MAX = [9, 15]
#: one station of the independent renderer: fixed optics, free pose
STATION = {"lighting": "backlit", "width_px": 80, "opacity": 0.25, "jpeg_quality": 85, "crosses_border": False}


@pytest.mark.parametrize("shape", [(480, 640), (50, 70), (100, 130)])
def test_one_descriptor_per_heat_map_cell(shape: tuple[int, int]) -> None:
    geometry = TileGeometry()
    heat = geometry.heatmap(np.zeros((1, 8, 8)), np.array([0]), np.array([0]), shape)
    cells = cell_descriptors(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    assert cells.shape == (heat.size, SIZE) and cells.dtype == np.float32 and np.isfinite(cells).all()


def band(angle_deg: float, spot: bool = False) -> np.ndarray:
    """A dark straight band (a tube seen from above) through the frame's centre, optionally with a dark spot on it."""
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    theta = np.deg2rad(angle_deg)
    across = -(x - 160) * np.sin(theta) + (y - 120) * np.cos(theta)
    image = 200 - 80 * (np.abs(across) < 30)
    if spot:
        image = image - 60 * (np.hypot(x - 160, y - 120) < 5)
    return np.clip(ndimage.gaussian_filter(image.astype(np.float32), 1.2), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("angle", [0.0, 17.0, 30.0])
def test_a_straight_tube_changes_little_along_its_axis_at_any_pose(angle: float) -> None:
    """Along the axis a good tube is quiet whatever its angle; its edges show across it; a spot breaks the quiet."""
    inner = (slice(8, 22), slice(12, 28))  # cells well inside the frame, on and around the band
    good = cell_descriptors(band(angle)).reshape(30, 40, SIZE)[inner]
    spotted = cell_descriptors(band(angle, spot=True)).reshape(30, 40, SIZE)[inner]
    along, across = good[..., ALONG_MAX].max(), good[..., ACROSS_MAX].max()
    assert along < 0.2 * across
    assert spotted[..., ALONG_MAX].max() > 3 * along


def learn_station(frames: int) -> StationLearner:
    learner = StationLearner(StationSettings(frames=frames))
    for index in range(frames):
        learner.add(cell_descriptors(render_part_with_conditions(7, index, False, **STATION)[0].image))
    return learner


def test_a_station_of_the_other_renderer_flags_a_defect_painted_on_a_held_out_good_part() -> None:
    """Learned from 40 good frames of the independent renderer: a held-out good frame stays within its normal
    (no cell more unusual than the held-out learning frames' most unusual), the same frame with a 12 px spot
    painted on the tube's lumen is more unusual than that, and its most unusual cell is the spot."""
    station = learn_station(40).build()
    image, painted, (cx, cy) = painted_part(501)
    good = station.novelty(cell_descriptors(image)).reshape(60, 80)
    novelty = station.novelty(cell_descriptors(painted)).reshape(60, 80)
    row, col = np.unravel_index(int(np.argmax(novelty)), novelty.shape)
    assert good.max() < 1.0
    assert novelty.max() > 1.1
    assert abs(col * 8 + 4 - cx) <= 12 and abs(row * 8 + 4 - cy) <= 12


def painted_part(index: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A good part of the independent renderer's station, the same with a 12 px spot on its lumen, and the spot."""
    part, conditions = render_part_with_conditions(7, index, False, **STATION)
    geometry = place(conditions, 7, index)
    y, x = np.mgrid[0:480, 0:640]
    spot = np.hypot(x - geometry.cx, y - geometry.cy) < 6
    painted = np.clip(part.image.astype(np.int16) - 50 * spot, 0, 255).astype(np.uint8)
    return part.image, painted, (geometry.cx, geometry.cy)


def test_the_quality_task_s_station_notices_a_painted_spot_its_classifier_features_did_not(tmp_path: Path) -> None:
    """Through the task: learned from 40 good parts of the other renderer, the station calls a held-out good part
    usual and the same part with a spot unusual.  On the classifier's cell features (before the descriptors) the
    painted part scored exactly as the good one (novelty 0.592 both: the spot was not its most unusual cell)."""
    context = TaskContext("test-device", tmp_path, load_model, structlog.get_logger("test"))
    task = QualityTask(QualityConfig(station_normal=True, learn_frames=40), context)
    for index in range(40):
        image = render_part_with_conditions(7, index, False, **STATION)[0].image
        task.process(SensorMessage("cam", Kind.FRAME, index, index, image, 0.0))
    good, painted, _ = painted_part(501)
    (usual,) = task.process(SensorMessage("cam", Kind.FRAME, 40, 40, good, 0.0))
    (spotted,) = task.process(SensorMessage("cam", Kind.FRAME, 41, 41, painted, 0.0))
    task.close()
    assert usual.body["station"] == "ready" and usual.body["novelty"] < 1.0
    assert spotted.body["novelty"] > 1.1

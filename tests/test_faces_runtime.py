"""The face task's run-time blocks: five-point alignment and the IoU tracker with its decision policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.faces.runtime.align import (
    ARCFACE_TEMPLATE,
    CROP_SIZE,
    align_face,
    alignment_transform,
    apply_transform,
    similarity_transform,
    warp,
)
from models.faces.runtime.tracker import DecisionPolicy, IouTracker, Track, iou
from sensors.simulate.faces import render_scene, sample_identities


def _similarity(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(angle_deg)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


@pytest.mark.parametrize(("scale", "angle", "shift"), [(1.0, 0.0, (0.0, 0.0)), (0.37, 23.0, (-40.0, 12.5)),
                                                       (2.5, -171.0, (300.0, -7.0))])
def test_a_known_similarity_is_recovered_exactly(scale: float, angle: float, shift: tuple[float, float]) -> None:
    points = np.random.default_rng(0).uniform(0, 400, (5, 2))
    truth = _similarity(scale, angle, shift)
    estimated = similarity_transform(points, apply_transform(truth, points))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_a_mirrored_point_set_gives_a_rotation_not_a_reflection() -> None:
    points = np.random.default_rng(1).uniform(0, 100, (5, 2))
    mirrored = points * [-1.0, 1.0]
    matrix = similarity_transform(points, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_coincident_points_are_refused() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)


def test_the_warp_puts_a_frame_pixel_where_the_transform_says() -> None:
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[150:153, 200:203] = 255  # a 3 x 3 dot centred on pixel (201, 151)
    matrix = _similarity(0.5, 30.0, (-40.0, -30.0))
    crop = warp(frame, matrix)
    expected = apply_transform(matrix, np.array([[201.0, 151.0]]))[0]
    ys, xs = np.nonzero(crop[..., 0])
    weights = crop[ys, xs, 0].astype(float)
    found = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.linalg.norm(found - expected) < 0.5


def test_landmarks_drawn_in_a_frame_land_on_the_template_after_alignment() -> None:
    # a face-shaped set of five dots, rotated, scaled and moved in a frame, must come back onto the template
    to_frame = _similarity(1.7, -25.0, (210.0, 90.0))
    landmarks = np.round(apply_transform(to_frame, ARCFACE_TEMPLATE))
    frame = np.zeros((400, 500, 3), np.uint8)
    for x, y in landmarks.astype(int):
        frame[y - 2:y + 3, x - 2:x + 3] = 255
    crop = align_face(frame, landmarks)[..., 0].astype(float)
    for expected in ARCFACE_TEMPLATE:
        x0, y0 = (int(v) - 6 for v in expected)
        window = crop[y0:y0 + 13, x0:x0 + 13]
        ys, xs = np.nonzero(window)
        found = np.array([np.average(xs, weights=window[ys, xs]) + x0, np.average(ys, weights=window[ys, xs]) + y0])
        assert np.linalg.norm(found - expected) < 2.0


def test_aligning_a_rendered_scene_face_levels_and_centres_it_on_the_template() -> None:
    # The synthetic faces' proportions differ from the template's (their mouths sit higher, eye spacing
    # varies per person), so single points may miss by several pixels; the eyes must be level and centred,
    # and the points on average near the template.
    rng = np.random.default_rng(4)
    identities = sample_identities(6, seed=9)
    checked = 0
    for _ in range(6):
        frame, faces = render_scene(identities[:3], rng)
        for _box, landmarks in faces:
            marks = np.array(landmarks)
            crop = align_face(frame, marks)
            aligned = apply_transform(alignment_transform(marks), marks)
            eyes = aligned[1] - aligned[0]
            assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
            assert abs(math.degrees(math.atan2(eyes[1], eyes[0]))) < 4.0
            assert np.linalg.norm(aligned[:2].mean(axis=0) - ARCFACE_TEMPLATE[:2].mean(axis=0)) < 5.0
            assert np.linalg.norm(aligned - ARCFACE_TEMPLATE, axis=1).mean() < 4.5
            checked += 1
    assert checked >= 6


# --- tracker ---------------------------------------------------------------------------------------------

def test_iou_of_known_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


_start = st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(30, 120))
_drift = st.tuples(st.floats(-3, 3), st.floats(-3, 3))


@settings(max_examples=60, deadline=None)
@given(starts=st.lists(_start, min_size=1, max_size=4), steps=st.lists(st.lists(_drift, min_size=4, max_size=4),
                                                                        min_size=1, max_size=25))
def test_slowly_moving_boxes_keep_their_ids(starts: list[tuple[float, float, float]],
                                            steps: list[list[tuple[float, float]]]) -> None:
    # faces far apart (one per 1000 px column) that move at most 3 px a frame never change id
    positions = [[1000.0 * index + x, y] for index, (x, y, _side) in enumerate(starts)]
    sides = [side for _x, _y, side in starts]
    tracker = IouTracker(iou_threshold=0.3, max_missed=2)

    def frame() -> list[tuple[float, float, float, float]]:
        return [(x, y, x + side, y + side) for (x, y), side in zip(positions, sides, strict=True)]

    first = tracker.update(frame()).track_ids
    assert len(set(first)) == len(first)
    for step in steps:
        for position, (dx, dy) in zip(positions, step, strict=False):
            position[0] += dx
            position[1] += dy
        assert tracker.update(frame()).track_ids == first


@settings(max_examples=60, deadline=None)
@given(frames=st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=4), max_size=30))
def test_an_ended_track_id_is_never_reused(frames: list[list[tuple[int, int]]]) -> None:
    # boxes jump on a coarse grid, so tracks start, miss and end often
    tracker = IouTracker(iou_threshold=0.5, max_missed=1)
    ended_ids: set[int] = set()
    for cells in frames:
        boxes = [(60.0 * cx, 60.0 * cy, 60.0 * cx + 50, 60.0 * cy + 50) for cx, cy in set(cells)]
        result = tracker.update(boxes)
        assert len(set(result.track_ids)) == len(result.track_ids)
        assert not ended_ids & set(result.track_ids)
        ended_ids |= {track.track_id for track in result.ended}
    assert not ended_ids & set(tracker.tracks)


def test_a_track_ends_after_max_missed_frames() -> None:
    tracker = IouTracker(max_missed=2)
    (track_id,) = tracker.update([(0, 0, 50, 50)]).track_ids
    assert tracker.update([]).ended == []
    assert tracker.update([]).ended == []
    assert [track.track_id for track in tracker.update([]).ended] == [track_id]
    assert tracker.update([(0, 0, 50, 50)]).track_ids != [track_id]


def test_the_mean_embedding_is_normalised_and_weights_frames_equally() -> None:
    track = Track(1, (0, 0, 1, 1))
    track.add_embedding(np.array([10.0, 0.0]))
    track.add_embedding(np.array([0.0, 0.1]))
    track.add_embedding(np.zeros(2))
    mean = track.mean_embedding()
    assert mean is not None
    np.testing.assert_allclose(mean, np.array([math.sqrt(0.5), math.sqrt(0.5)]))
    assert len(track.embeddings) == 2


def test_the_policy_decides_once_at_min_frames() -> None:
    policy = DecisionPolicy(min_frames=3)
    track = Track(7, (0, 0, 1, 1))
    decisions = []
    for value in range(5):
        track.add_embedding(np.array([1.0, float(value)]))
        decisions.append(policy.ready(track))
    assert [decision is not None for decision in decisions] == [False, False, True, False, False]
    assert decisions[2] is not None and decisions[2].frames == 3 and not decisions[2].at_track_end
    assert policy.ended(track) is None


def test_the_policy_decides_a_short_track_at_its_end_and_skips_an_empty_one() -> None:
    policy = DecisionPolicy(min_frames=5)
    short, empty = Track(1, (0, 0, 1, 1)), Track(2, (0, 0, 1, 1))
    short.add_embedding(np.array([0.0, 2.0]))
    assert policy.ready(short) is None
    decision = policy.ended(short)
    assert decision is not None and decision.at_track_end and decision.frames == 1
    np.testing.assert_allclose(decision.embedding, [0.0, 1.0])
    assert policy.ended(empty) is None

"""Tests of the synthetic face generators: determinism, shapes, balance, identity signal, scenes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from sensors.simulate import faces, faces_alt


@pytest.mark.parametrize("module", [faces, faces_alt])
class TestIdentities:
    def test_the_same_seed_gives_the_same_identities_and_pixels(self, module) -> None:
        first, second = module.sample_identities(6, seed=3), module.sample_identities(6, seed=3)
        assert first == second
        assert module.sample_identities(6, seed=4) != first
        a = module.render_face(first[0], np.random.default_rng(9))
        b = module.render_face(second[0], np.random.default_rng(9))
        assert np.array_equal(a, b)

    def test_crops_are_aligned_rgb_uint8_of_the_requested_size(self, module) -> None:
        identity = module.sample_identities(1, seed=0)[0]
        for size in (112, 64):
            crop = module.render_face(identity, np.random.default_rng(1), size=size)
            assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
            assert crop.std() > 10  # a face, not a flat fill

    def test_groups_are_balanced(self, module) -> None:
        counts = Counter(identity.group for identity in module.sample_identities(41, seed=2))
        assert set(counts) == set(module.GROUPS)
        assert max(counts.values()) - min(counts.values()) <= 1

    def test_pictures_of_one_person_are_closer_than_pictures_of_two(self, module) -> None:
        """Raw-pixel sanity check of the identity signal: mean same-identity distance < different-identity."""
        rng = np.random.default_rng(5)
        people = module.sample_identities(12, seed=7)
        crops = np.stack([module.render_face(p, rng, size=48) for p in people for _ in range(4)]).astype(float)
        # grey-world normalisation, so light and background colour do not dominate the distance
        flat = crops.reshape(len(crops), -1)
        flat = (flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)
        labels = np.repeat(np.arange(len(people)), 4)
        distances = np.linalg.norm(flat[:, None] - flat[None], axis=2)
        same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
        different = labels[:, None] != labels[None]
        assert distances[same].mean() < distances[different].mean()


class TestScenes:
    def test_scene_boxes_and_landmarks_lie_in_the_frame_and_faces_are_drawn(self) -> None:
        people = faces.sample_identities(4, seed=1)
        frame, placed = faces.render_scene(people, np.random.default_rng(2), width=320, height=240)
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        assert 1 <= len(placed) <= 4
        for (x0, y0, x1, y1), marks in placed:
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
            for x, y in marks:
                assert x0 - 2 <= x <= x1 + 2 and y0 - 2 <= y <= y1 + 2
            assert marks.left_eye[0] < marks.right_eye[0] or abs(marks.left_eye[1] - marks.right_eye[1]) > 1

    def test_an_empty_scene_has_no_faces(self) -> None:
        frame, placed = faces.render_scene([], np.random.default_rng(0), width=64, height=48)
        assert frame.shape == (48, 64, 3) and placed == []

"""Tests of the quality data generator, its splits and label noise, the tiling geometry and the camera simulator."""

from __future__ import annotations

import hashlib
import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.quality.runtime.tiling import TileGeometry
from sensors.simulate import tube as render
from sensors.simulate.camera import CameraSimulator
from sensors.simulate.parts import HEIGHT, WIDTH, DefectSpec, LabelNoise, PartGenerator, cut_end_points, draw_spec
from sensors.wire import Encoding, Kind, decode, encode


@pytest.fixture(scope="module")
def generator() -> PartGenerator:
    return PartGenerator(seed=11)


class TestGenerator:
    def test_same_seed_same_part(self, generator: PartGenerator) -> None:
        """A part is a pure function of (seed, split, index): pixels, mask and defects repeat exactly."""
        first, again = generator.part("test", 5, defective=True), PartGenerator(seed=11).part("test", 5, defective=True)
        np.testing.assert_array_equal(first.image, again.image)
        np.testing.assert_array_equal(first.mask, again.mask)
        assert first.defects == again.defects

    def test_other_seed_other_part(self, generator: PartGenerator) -> None:
        """Another seed renders another frame."""
        assert not np.array_equal(generator.part("val", 0).image, PartGenerator(seed=12).part("val", 0).image)

    def test_frame_format(self, generator: PartGenerator) -> None:
        """Frames are 640x480 uint8 grayscale with a same-sized boolean mask."""
        part = generator.part("train", 3)
        assert part.image.shape == (HEIGHT, WIDTH) and part.image.dtype == np.uint8
        assert part.mask.shape == part.image.shape and part.mask.dtype == bool

    def test_masks_match_defects(self, generator: PartGenerator) -> None:
        """Every defect has mask pixels filling its box edges; the mask holds nothing outside the boxes."""
        for index in range(6):
            part = generator.part("test", index, defective=True)
            assert part.defective and part.mask.any()
            outside = part.mask.copy()
            for defect in part.defects:
                x0, y0, x1, y1 = defect.box
                region = part.mask[y0:y1, x0:x1]
                assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
                assert defect.size_px == max(x1 - x0, y1 - y0)
                outside[y0:y1, x0:x1] = False
            assert not outside.any()

    def test_good_parts_have_empty_masks(self, generator: PartGenerator) -> None:
        """A part forced good has no defects and an empty mask."""
        part = generator.part("val", 2, defective=False)
        assert not part.defective and not part.mask.any()

    def test_defect_masks_cover_the_drawn_change(self) -> None:
        """Each drawn defect patch changes its masked pixels most: the peak and most of the change lie inside."""
        rng = np.random.default_rng(5)
        patches = [render.scratch(rng, 100, 100, 20, zigzag=False), render.bubble(rng, 100, 100, 4, 1.2),
                   render.spot(rng, 100, 100, 2.5, ring=False), render.spot(rng, 100, 100, 2.5, ring=True)]
        for patch in patches:
            change = np.abs(patch.add)
            assert patch.mask[np.unravel_index(np.argmax(change), change.shape)]
            assert change[patch.mask].mean() > 3 * change[~patch.mask].mean()

    def test_realistic_defect_rate(self, generator: PartGenerator) -> None:
        """Between 2% and 5% of parts are defective."""
        rate = np.mean([generator.labels("test", i)[0] for i in range(20_000)])
        assert 0.02 <= rate <= 0.05

    def test_defect_sizes_reach_a_few_pixels(self, generator: PartGenerator) -> None:
        """Held-out parts include defects only a few pixels across and defects of every kind."""
        defects = [d for i in range(120) for d in generator.part("test", 1000 + i, defective=True).defects]
        assert min(d.size_px for d in defects) <= 5
        assert {d.kind for d in defects} == {"scratch", "bubble", "spot", "kink"}


@pytest.fixture(scope="module")
def broad_parts() -> list:
    generator = PartGenerator(seed=11)
    return [generator.part("val", 100_000 + i, defective=i % 2 == 0) for i in range(60)]


class TestBroadConditions:
    def test_both_lightings_about_half_each(self, broad_parts: list) -> None:
        """The default (broad) generator draws backlit and dark-field frames, about half each; dark-field is dark."""
        lightings = [p.scene.lighting for p in broad_parts]
        assert 0.3 < lightings.count("darkfield") / len(lightings) < 0.7
        dark = [np.median(p.image) for p in broad_parts if p.scene.lighting == "darkfield"]
        lit = [np.median(p.image) for p in broad_parts if p.scene.lighting == "backlit"]
        assert max(dark) < min(lit)

    def test_poses_beyond_twenty_degrees(self, broad_parts: list) -> None:
        """Poses reach past 20 degrees both ways and stay within 30."""
        angles = np.array([p.scene.angle_deg for p in broad_parts])
        assert angles.max() > 20 and angles.min() < -20 and np.abs(angles).max() <= 30
        assert {p.scene.pose_bucket for p in broad_parts} == {"0-10 deg", "10-20 deg", "20-30 deg"}

    def test_cut_ends_and_border_crossings(self, broad_parts: list) -> None:
        """Some frames show finite segments (one and two cut ends), some a tube across the frame border."""
        cuts = {p.scene.cut_ends for p in broad_parts}
        assert {0, 1, 2} <= cuts
        assert 0.1 < np.mean([p.scene.crosses_border for p in broad_parts]) < 0.6

    def test_camera_effects_and_nuisances(self, broad_parts: list) -> None:
        """JPEG qualities 60-95 (and some uncompressed frames), blur, and nuisances reported for hard negatives."""
        qualities = [p.scene.jpeg_quality for p in broad_parts]
        assert None in qualities and all(60 <= q <= 95 for q in qualities if q is not None)
        assert max(p.scene.blur for p in broad_parts) > 1.0
        assert sum(len(p.nuisances) for p in broad_parts) > len(broad_parts)

    def test_cut_end_segment_stops_inside_the_frame(self) -> None:
        """A finite segment's silhouette ends at its cut: past the end the pixels are background."""
        tube = render.Tube(320, 240, 0.0, 40, 0.0, 3, 0.5, 0.2, 0.4, 0.1, 0.0, 0.0, 3.0, ends=(-1e6, 0.0))
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        _, _, inside = render.structure(tube, ys, xs)
        assert inside[240, 300] == 1 and inside[240, 340] == 0
        assert cut_end_points(tube) == [(200, 320), (240, 320), (280, 320)]  # corners and middle: hard negatives

    def test_defects_change_their_masked_pixels_in_darkfield(self) -> None:
        """In dark-field, scratches, bubbles and spots scatter bright: the frame brightens under each mask."""
        rng = np.random.default_rng(3)
        tube = render.Tube(320, 240, 0.2, 45, 0.0, 3, 0.5, 0.2, 0.4, 0.1, 0.0, 0.0, 3.0)
        for kind, variant, size in (("scratch", "curve", 25), ("bubble", "round", 5), ("spot", "blob", 3)):
            frame = np.full((HEIGHT, WIDTH), 0.05)
            before, inside, mask = frame.copy(), np.ones_like(frame), np.zeros((HEIGHT, WIDTH), dtype=bool)
            spec = DefectSpec(kind, variant, size, True)
            defect = PartGenerator._draw(rng, tube, spec, None, (240.0, 320.0), (frame, inside, mask), bright=rng)
            change = frame - before
            assert defect is not None and mask.any(), kind
            assert (change[mask] > 0).mean() > 0.8 and change[mask].mean() > 0.05, kind
            assert change.min() >= 0, kind

    def test_kinks_change_their_masked_pixels_in_darkfield(self) -> None:
        """A kink in a dark-field frame changes pixels mostly under its mask (crease and silhouette glow)."""
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
        frames = []
        for kinks in ([], [render.Kink(0.0, 6.0, 10.0, 0.1, 0.3, 0.2)]):
            tube = render.Tube(320, 240, 0.3, 45, 0.0, 3, 0.5, 0.2, 0.4, 0.1, 0.0, 0.0, 3.0, kinks=kinks)
            absorb, streak, inside = render.structure(tube, ys, xs)
            frames.append(render.darkfield(np.random.default_rng(0), ys, xs, absorb, streak, inside, tube))
        mask = render.kink_mask(tube, tube.kinks[0], ys, xs)
        change = np.abs(frames[1] - frames[0])
        assert change[mask].max() > 0.2
        assert change[mask].mean() > 5 * change[~mask].mean()

    def test_darkfield_parts_keep_masks_on_their_defects(self, broad_parts: list) -> None:
        """Rendered dark-field defects are brighter under their mask than the part around them."""
        brighter = []
        for part in broad_parts:
            if part.scene.lighting != "darkfield":
                continue
            for defect in part.defects:
                if defect.kind == "kink":
                    continue
                x0, y0, x1, y1 = defect.box
                box = (slice(max(y0 - 6, 0), y1 + 6), slice(max(x0 - 6, 0), x1 + 6))
                image, mask = part.image[box].astype(float), part.mask[box]
                brighter.append(image[mask].mean() > np.median(image[~mask]))
        assert len(brighter) >= 5 and np.mean(brighter) > 0.8

    def test_narrow_conditions_render_the_old_frames(self) -> None:
        """``conditions="narrow"`` is the 1.0 generator: backlit, +-10 deg, no cut ends, the same pixels."""
        generator = PartGenerator(seed=7, conditions="narrow")
        scenes = [generator.part("test", i).scene for i in range(8)]
        assert all(s is not None and s.lighting == "backlit" and abs(s.angle_deg) <= 10 and s.cut_ends == 0
                   and s.jpeg_quality is None for s in scenes)
        digest = hashlib.sha256(generator.part("test", 100_003, defective=True).image.tobytes()).hexdigest()
        assert digest == "9424709af05ad129d06c5caa5039c7d286f02387ccc3d1c17cbf3445c45a6daf"  # 1.0.0's frame
        with pytest.raises(ValueError, match="conditions"):
            PartGenerator(conditions="wide")


class TestSplits:
    def test_label_noise_only_in_train(self, generator: PartGenerator) -> None:
        """Human labels differ from the truth in the training split only, at about the configured rates."""
        for split in ("val", "test", "demo"):
            assert all(truth == label for truth, label in (generator.labels(split, i) for i in range(20_000)))
        pairs = [generator.labels("train", i) for i in range(20_000)]
        missed = sum(truth and not label for truth, label in pairs) / max(sum(t for t, _ in pairs), 1)
        painted = sum(label and not truth for truth, label in pairs) / sum(not t for t, _ in pairs)
        noise = LabelNoise()
        assert 0.5 * noise.missed < missed < 2 * noise.missed
        assert 0.3 * noise.false_reject < painted < 3 * noise.false_reject

    def test_wrong_labels_carry_wrong_annotations(self, generator: PartGenerator) -> None:
        """A good part labelled defective has a painted region but no true mask."""
        index = next(i for i in range(20_000) if generator.labels("train", i) == (False, True))
        part = generator.part("train", index)
        assert part.label and not part.defective
        assert part.annotation is not None and part.annotation.any() and not part.mask.any()

    def test_held_out_shapes_and_sizes_unseen_in_training(self) -> None:
        """Training and validation draw only seen defect shapes and sizes; the held-out splits also unseen ones."""
        rng = np.random.default_rng(0)
        assert all(draw_spec(rng, held_out=False).seen for _ in range(2000))
        held = [draw_spec(rng, held_out=True) for _ in range(2000)]
        assert 0.3 < np.mean([not s.seen for s in held]) < 0.5
        assert {"zigzag", "cluster", "ring", "speckle", "constriction", "elongated"} <= {s.variant for s in held}


class TestTiling:
    @given(st.integers(1, 2000), st.sampled_from([32, 64, 96]), st.integers(8, 96))
    @settings(max_examples=200, deadline=None)
    def test_tiles_cover_every_pixel(self, length: int, tile: int, stride: int) -> None:
        """Tile starts cover the whole axis, never leave it, and are at most a stride apart."""
        geometry = TileGeometry(tile=tile, stride=min(stride, tile))
        starts = geometry.starts(length)
        assert starts[0] == 0 and starts[-1] + tile >= length
        assert all(0 <= s <= max(length - tile, 0) for s in starts)
        assert all(0 < b - a <= geometry.stride for a, b in itertools.pairwise(starts))

    def test_heatmap_takes_the_maximum_of_overlapping_tiles(self) -> None:
        """Stitching puts each tile's cells at its position and keeps the maximum where tiles overlap."""
        geometry = TileGeometry(tile=16, stride=8, cell=8)
        tiles, ys, xs = geometry.tiles(np.zeros((16, 24), dtype=np.uint8))
        assert tiles.shape == (2, 1, 16, 16) and list(xs) == [0, 8]
        cells = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.5, 0.4], [0.6, 0.7]]], dtype=np.float32)
        heat = geometry.heatmap(cells, ys, xs, (16, 24))
        np.testing.assert_allclose(heat, [[0.1, 0.9, 0.4], [0.2, 0.6, 0.7]])
        peak, box = geometry.peak_and_box(heat, 0.85)
        assert peak == (12, 4) and box == (8, 0, 16, 8)

    def test_small_frames_are_padded(self) -> None:
        """A frame smaller than a tile still gives one full tile."""
        tiles, _, _ = TileGeometry().tiles(np.full((20, 30), 128, dtype=np.uint8))
        assert tiles.shape == (1, 1, 64, 64)


class TestCameraSimulator:
    def test_frames_are_deterministic_jpeg_with_part_ids(self) -> None:
        """Two simulators with one seed send identical JPEG frames carrying the part id in meta."""
        first, second = CameraSimulator("cam-1", seed=3), CameraSimulator("cam-1", seed=3)
        a, b = list(first.stream(4.0, 1_000, count=3)), list(second.stream(4.0, 1_000, count=3))
        assert [m.data for m in a] == [m.data for m in b]
        message = decode(encode(a[1]))
        assert message.kind is Kind.FRAME and message.encoding is Encoding.JPEG
        assert message.meta == {"part_id": "cam-1-P000001"} and message.timestamp_ns == 1_000 + 250_000_000
        assert Image.open(io.BytesIO(bytes(message.data))).size == (WIDTH, HEIGHT)

    def test_ground_truth_by_part_id(self) -> None:
        """The simulator keeps each part's truth, matching the rendered part, and honours the defect rate."""
        camera = CameraSimulator("cam-2", defect_rate=0.5, seed=4)
        messages = list(camera.stream(2.0, 1, count=12))
        truths = [camera.truth(m.meta["part_id"]) for m in messages]
        assert 2 <= sum(t.defective for t in truths) <= 10
        index = next(i for i, t in enumerate(truths) if t.defective)
        assert truths[index].kinds == tuple(d.kind for d in camera.render(index).defects)
        with pytest.raises(KeyError):
            camera.truth("cam-2-P999999")

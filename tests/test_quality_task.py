"""Tests of the quality task with the committed model: decisions, defect location, crops and rejected input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import structlog
from PIL import Image

from agent.events import finalize, schema
from agent.tasks.base import RejectedInput, TaskContext
from agent.tasks.quality.task import QualityConfig, QualityTask
from agent.windowing import Window
from models.runtime import load_model
from sensors.errors import ConfigError
from sensors.simulate.parts import Part, PartGenerator
from sensors.wire import Encoding, Kind, SensorMessage

SEED = 2024


def make_task(tmp_path: Path, **settings: object) -> QualityTask:
    context = TaskContext("test-device", tmp_path, load_model, structlog.get_logger("test"))
    return QualityTask(QualityConfig(**settings), context)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QualityTask]:
    quality = make_task(tmp_path_factory.mktemp("quality"))
    yield quality
    quality.close()


def frame(pixels: np.ndarray | bytes, encoding: Encoding = Encoding.RAW, part_id: str = "P-000001") -> SensorMessage:
    return SensorMessage("camera-01", Kind.FRAME, 7, 1_700_000_000_000_000_000, pixels, 0.0, encoding,
                         {"part_id": part_id})


def jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def obvious_defect(generator: PartGenerator) -> Part:
    """The first held-out defective part whose one defect is a clearly visible, seen-size spot or bubble."""
    for index in range(200):
        part = generator.part("test", index, defective=True)
        if len(part.defects) == 1 and part.defects[0].kind in ("spot", "bubble") and part.defects[0].seen \
                and part.defects[0].size_px >= 8:
            return part
    raise AssertionError("no obvious defect in the first 200 parts")


@pytest.fixture(scope="module")
def defective() -> Part:
    return obvious_defect(PartGenerator(SEED))


@pytest.fixture(scope="module")
def clean() -> Part:
    return PartGenerator(SEED).part("test", 0, defective=False)


class TestDecisions:
    def test_rejects_an_obviously_defective_part(self, task: QualityTask, defective: Part) -> None:
        """A part with a clear spot or bubble gives one alarm event that rejects it."""
        (event,) = task.process(frame(jpeg(defective.image), Encoding.JPEG, part_id="P-bad"))
        assert event.type == "part_inspected" and event.severity == "alarm"
        assert event.body["decision"] == "reject" and event.body["part_id"] == "P-bad"
        assert event.score is not None and event.score > event.body["threshold"]

    def test_accepts_a_clean_part(self, task: QualityTask, clean: Part) -> None:
        """A defect-free part gives one info event that accepts it, with no attachment."""
        (event,) = task.process(frame(jpeg(clean.image), Encoding.JPEG))
        assert event.severity == "info" and event.body["decision"] == "accept"
        assert event.attachment is None and event.body["tiles"] == 108

    def test_location_lies_on_the_defect(self, task: QualityTask, defective: Part) -> None:
        """The heat-map peak falls on the defect mask (within one 8 px cell) and the box overlaps it."""
        (event,) = task.process(frame(defective.image))
        x, y = event.body["location"]["peak"]
        rows, cols = np.nonzero(defective.mask)
        assert cols.min() - 8 <= x <= cols.max() + 8 and rows.min() - 8 <= y <= rows.max() + 8
        x0, y0, x1, y1 = event.body["location"]["box"]
        assert defective.mask[y0:y1, x0:x1].any()

    def test_reject_attaches_a_jpeg_crop_of_the_defect(self, task: QualityTask, defective: Part) -> None:
        """The reject's attachment is a JPEG crop of the configured size around the defect."""
        (event,) = task.process(frame(defective.image))
        assert event.attachment is not None and event.attachment[:2] == b"\xff\xd8"
        crop = Image.open(io.BytesIO(event.attachment))
        assert crop.format == "JPEG" and crop.size == (128, 128) and crop.mode == "RGB"

    def test_events_validate_against_the_schema(self, task: QualityTask, defective: Part) -> None:
        """Finalised quality events are valid agent events."""
        (event,) = task.process(frame(defective.image))
        jsonschema.validate(finalize(event, "test-device", task.name), schema())


class TestInputs:
    def test_raw_gray_rgb_and_png_give_the_same_score(self, task: QualityTask, defective: Part) -> None:
        """Raw grayscale, raw RGB (equal channels) and PNG frames of one image score identically."""
        gray = defective.image
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format="PNG")
        scores = [task.process(message)[0].score for message in
                  (frame(gray), frame(rgb), frame(buffer.getvalue(), Encoding.PNG))]
        assert scores[0] == scores[1] == scores[2]

    def test_truncated_jpeg_is_rejected(self, task: QualityTask, clean: Part) -> None:
        """A JPEG cut short raises RejectedInput that says it is truncated or corrupt."""
        data = jpeg(clean.image)
        with pytest.raises(RejectedInput, match="corrupt or truncated"):
            task.process(frame(data[: len(data) // 2], Encoding.JPEG))

    def test_garbage_and_mislabelled_payloads_are_rejected(self, task: QualityTask, clean: Part) -> None:
        """Bytes that are no image, or a PNG sent as JPEG, raise RejectedInput with the reason."""
        with pytest.raises(RejectedInput, match="not a decodable JPEG"):
            task.process(frame(b"\x00not an image at all", Encoding.JPEG))
        buffer = io.BytesIO()
        Image.fromarray(clean.image).save(buffer, format="PNG")
        with pytest.raises(RejectedInput, match="declared jpeg but the payload is PNG"):
            task.process(frame(buffer.getvalue(), Encoding.JPEG))

    def test_wrong_shapes_and_kinds_are_rejected(self, task: QualityTask) -> None:
        """Two-channel or tiny raw frames and vibration windows raise RejectedInput."""
        with pytest.raises(RejectedInput, match="shape"):
            task.process(frame(np.zeros((40, 40, 2), dtype=np.uint8)))
        with pytest.raises(RejectedInput, match="smaller than"):
            task.process(frame(np.zeros((8, 200), dtype=np.uint8)))
        window = Window("pump-1", Kind.VIBRATION, np.zeros((10, 1), np.float32), 1000.0, 1, 0)
        with pytest.raises(RejectedInput, match="camera frames"):
            task.process(window)


class TestConfig:
    def test_threshold_overrides(self, tmp_path: Path) -> None:
        """An explicit threshold wins; a false-reject target picks the manifest's validated threshold."""
        explicit = make_task(tmp_path, reject_threshold=0.42)
        assert explicit.threshold == 0.42
        table = explicit.model.manifest.postprocessing["false_reject_thresholds"]
        relaxed = make_task(tmp_path, false_reject_target=0.05)
        assert relaxed.threshold == table["0.05"]
        with pytest.raises(ConfigError, match="no validated threshold"):
            make_task(tmp_path, false_reject_target=0.0001)

    def test_unknown_keys_are_refused(self) -> None:
        """The config rejects keys it does not know."""
        with pytest.raises(ValueError, match="extra"):
            QualityConfig.model_validate({"tile_size": 32})

"""Visual quality control: one accept/reject decision per camera frame of a part, with the defect's location.

The frame is cut into overlapping tiles; the tile CNN (ONNX) gives each tile a grid of defect
probabilities.  The part's score is the maximum over all tiles, the stitched grids form a heat
map whose peak and surrounding hot region locate the defect.  A reject carries a JPEG crop of
that region as the event attachment.  numpy + Pillow only: no torch at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import models
from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.frames import decode_frame, encode_jpeg
from agent.tasks.quality import events
from agent.tasks.quality.config import QualityConfig
from agent.tasks.quality.simulate import CameraSimulation
from agent.windowing import Window
from models.quality.runtime.manifest import QualityManifest
from models.quality.runtime.tiling import Inference, infer
from models.runtime import Model
from sensors.wire import Kind, SensorMessage

DEFAULT_MODEL = Path(models.__file__).resolve().parent / "quality" / "manifest.yaml"


class QualityTask(Task[QualityConfig]):
    """Camera frames of parts -> ``part_inspected`` events (info on accept, alarm on reject)."""

    name = "quality"
    kinds = frozenset({Kind.FRAME})
    config_type = QualityConfig
    events = events.EVENTS
    simulation = CameraSimulation

    def __init__(self, config: QualityConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        self.model: Model = context.load_model(config.model or DEFAULT_MODEL)
        manifest = self.model.manifest
        typed = QualityManifest(manifest)
        self.geometry = typed.preprocessing.geometry()
        self.threshold = typed.threshold(config.reject_threshold, config.false_reject_target)
        self.ref = ModelRef(manifest.name, manifest.version)
        self.input_name = manifest.inputs[0].name

    @classmethod
    def check(cls, config: QualityConfig) -> None:
        """The manifest loads, is a quality model's, and has a threshold for the configured target."""
        from models.runtime import load_manifest

        typed = QualityManifest(load_manifest(config.model or DEFAULT_MODEL))
        typed.threshold(config.reject_threshold, config.false_reject_target)

    def run_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tile_prob, cell_prob = self.model.run({self.input_name: tiles})
        return tile_prob, cell_prob

    def inspect(self, image: np.ndarray) -> Inference:
        """Tiled inference on a grayscale frame."""
        return infer(self.run_tiles, image, self.geometry, self.config.tile_batch)

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, SensorMessage):
            raise RejectedInput(f"quality takes camera frames, got a {item.kind.name.lower()} window")
        image = decode_frame(item, mode="L")
        found = self.inspect(image)
        reject = found.score > self.threshold
        peak, box = self.geometry.peak_and_box(found.heat, self.config.box_level * found.score)
        box = clip_box(box, image.shape)
        body = events.PartInspected(
            part_id=str(item.meta.get("part_id", f"{item.sensor_id}-{item.seq}")),
            decision="reject" if reject else "accept",
            threshold=self.threshold,
            location=events.DefectLocation(box=list(box), peak=list(peak), peak_score=found.score),
            tiles=len(found.tile_scores),
            frame=events.FrameSize(width=int(image.shape[1]), height=int(image.shape[0])),
        )
        attachment = self.crop(image, box) if reject else None
        return [body.draft(item.sensor_id, item.timestamp_ns, "alarm" if reject else "info", found.score,
                           self.ref, attachment)]

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int]) -> bytes:
        """JPEG of the defect area (at least ``crop_size`` square) with the box drawn in red."""
        x0, y0, x1, y1 = box
        side = max(self.config.crop_size, x1 - x0 + 16, y1 - y0 + 16)
        height, width = image.shape[:2]
        left = int(np.clip((x0 + x1 - side) // 2, 0, max(width - side, 0)))
        top = int(np.clip((y0 + y1 - side) // 2, 0, max(height - side, 0)))
        patch = Image.fromarray(image[top : top + side, left : left + side]).convert("RGB")
        ImageDraw.Draw(patch).rectangle((x0 - left, y0 - top, x1 - left - 1, y1 - top - 1), outline=(255, 0, 0))
        return encode_jpeg(np.asarray(patch), self.config.crop_quality)

    def models(self) -> list[ModelRef]:
        return [self.ref]

    def close(self) -> None:
        self.model.close()


def clip_box(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(x0, 0), max(y0, 0), min(x1, int(shape[1])), min(y1, int(shape[0]))

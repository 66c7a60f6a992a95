"""Visual quality control: one accept/reject decision per camera frame of a part, with the defect's location.

The frame is cut into overlapping tiles; the tile CNN (ONNX) gives each tile a grid of defect
probabilities.  Each camera first learns its station's normal from hand-made descriptors of the cells
of its first frames (:mod:`agent.tasks.quality.stations`); then a cell counts as defective in
proportion to how unusual it is for that station.  The part's score is the maximum over the cells,
the stitched grid is a heat map whose peak and surrounding hot region locate the defect.  A reject
carries a JPEG crop of that region as the event attachment.  numpy + Pillow only: no torch at run time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

import models
from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.frames import decode_frame, encode_jpeg
from agent.tasks.quality import events
from agent.tasks.quality.commands import COMMANDS
from agent.tasks.quality.config import QualityConfig
from agent.tasks.quality.simulate import CameraSimulation
from agent.tasks.quality.stations import Station, Stations, StationStore
from agent.windowing import Window
from models.quality.runtime.descriptors import cell_descriptors
from models.quality.runtime.manifest import QualityManifest
from models.quality.runtime.station import StationNormal
from models.quality.runtime.tiling import Inference, infer
from models.runtime import Model
from sensors.wire import Kind, SensorMessage

DEFAULT_MODEL = Path(models.__file__).resolve().parent / "quality" / "manifest.yaml"
#: a reject's hottest cells kept for false-reject feedback (a few KB)
KEPT_CELLS = 64


class QualityTask(Task[QualityConfig]):
    """Camera frames of parts -> ``part_inspected`` events (info on accept, alarm on reject)."""

    name = "quality"
    kinds = frozenset({Kind.FRAME})
    config_type = QualityConfig
    events = events.EVENTS
    simulation = CameraSimulation
    commands = COMMANDS

    def __init__(self, config: QualityConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        self.model: Model = context.load_model(config.model or DEFAULT_MODEL)
        manifest = self.model.manifest
        typed = QualityManifest(manifest)
        self.geometry = typed.preprocessing.geometry()
        self.threshold = typed.threshold(config.reject_threshold, config.false_reject_target)
        self.ref = ModelRef(manifest.name, manifest.version)
        self.input_name = manifest.inputs[0].name
        self.with_stations = config.station_normal  # the station's descriptors come from the frame, not the model
        self.stations = Stations(StationStore(context.state_dir / "stations"), config.station_settings(),
                                 manifest.sha256 or f"{manifest.name}-{manifest.version}", context.log)
        self.gate = config.gate()

    @classmethod
    def check(cls, config: QualityConfig) -> None:
        """The manifest loads, is a quality model's, and has a threshold for the configured target."""
        from models.runtime import load_manifest

        typed = QualityManifest(load_manifest(config.model or DEFAULT_MODEL))
        typed.threshold(config.reject_threshold, config.false_reject_target)

    def run_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.model.run({self.input_name: tiles})
        return tuple(outputs[:2])

    def inspect(self, image: np.ndarray) -> Inference:
        """Tiled inference on a grayscale frame."""
        return infer(self.run_tiles, image, self.geometry, self.config.tile_batch)

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, SensorMessage):
            raise RejectedInput(f"quality takes camera frames, got a {item.kind.name.lower()} window")
        image = decode_frame(item, mode="L")
        found = self.inspect(image)
        drafts: list[EventDraft] = []
        verdict = Verdict(found.heat, found.score, "off")
        if self.with_stations:
            verdict = self._with_station(item, found, image, drafts)
        reject = verdict.score > self.threshold or verdict.cause == "novelty"
        peak, box = self.geometry.peak_and_box(verdict.heat, self.config.box_level * float(verdict.heat.max()))
        box = clip_box(box, image.shape)
        body = events.PartInspected(
            part_id=part_id(item),
            decision="reject" if reject else "accept",
            threshold=self.threshold,
            location=events.DefectLocation(box=list(box), peak=list(peak), peak_score=float(verdict.heat.max())),
            tiles=len(found.tile_scores),
            frame=events.FrameSize(width=int(image.shape[1]), height=int(image.shape[0])),
            station=verdict.station, classifier_score=found.score, novelty=verdict.novelty,
            cause=(verdict.cause or "defect") if reject else None,
        )
        if reject and verdict.normal is not None:
            self._keep_reject(item, verdict)
        attachment = self.crop(image, box) if reject else None
        drafts.append(body.draft(item.sensor_id, item.timestamp_ns, "alarm" if reject else "info", verdict.score,
                                 self.ref, attachment))
        return drafts

    def _with_station(self, item: SensorMessage, found: Inference, image: np.ndarray,
                      drafts: list[EventDraft]) -> Verdict:
        """Learn from the frame while the station learns; once learned, temper the classifier with it."""
        shape = (int(image.shape[0]), int(image.shape[1]))
        cells = cell_descriptors(image)
        station, started = self.stations.station(item.sensor_id, shape)
        if started:
            drafts.append(self._learning_event(station, item.timestamp_ns))
        if station.normal is None:
            if self.stations.learn(station, cells):
                drafts.append(self._ready_event(station, item.timestamp_ns))
            return Verdict(found.heat, found.score, "learning")
        novelty = station.normal.novelty(cells).reshape(found.heat.shape)
        combined = self.gate.combine(found.heat, novelty)
        most_novel = float(novelty.max())
        cause: Literal["novelty"] | None = None
        if most_novel > self.gate.reject and float(combined.max()) <= self.threshold:
            heat, cause = np.minimum(novelty / self.gate.reject, 1.0).astype(np.float32), "novelty"
        else:
            heat = combined
        return Verdict(heat, float(heat.max()), "ready", round(most_novel, 4), cause, cells, station.normal)

    def _learning_event(self, station: Station, time_ns: int) -> EventDraft:
        return events.BaselineLearning(frames_needed=self.config.learn_frames, reason=station.reason).draft(
            station.camera, time_ns, "info", None, self.ref)

    def _ready_event(self, station: Station, time_ns: int) -> EventDraft:
        assert station.normal is not None
        self.context.log.info("station normal learned", sensor=station.camera, frames=station.normal.frames)
        return events.BaselineReady(frames=station.normal.frames, bank_size=len(station.normal.bank),
                                    learn_s=round(time.monotonic() - station.started, 1)).draft(
            station.camera, time_ns, "info", None, self.ref)

    def _keep_reject(self, item: SensorMessage, verdict: Verdict) -> None:
        """Keep the reject's hottest cells (those of its box, at most KEPT_CELLS), projected, for feedback."""
        assert verdict.normal is not None and verdict.cells is not None
        heat = verdict.heat.ravel()
        hottest = np.argsort(heat)[::-1][:KEPT_CELLS]
        hottest = hottest[heat[hottest] >= self.config.box_level * float(heat.max())]
        points = verdict.normal.project(verdict.cells[hottest])
        try:
            self.stations.store.keep_reject(item.sensor_id, part_id(item), points)
        except OSError as error:  # feedback is a convenience: a full disk must not lose the reject event
            self.context.log.warning("reject not kept for feedback", sensor=item.sensor_id, error=str(error))

    def tick(self, now_ns: int) -> list[EventDraft]:
        if not self.with_stations:
            return []
        drafts = [self._learning_event(station, now_ns) for station in self.stations.notice_resets()]
        for result in self.stations.take_feedback():
            self.context.log.info("false reject taken in" if result.cells else "false reject not taken in",
                                  sensor=result.camera, part_id=result.part_id, reason=result.reason)
            drafts.append(events.FalseRejectLearned(part_id=result.part_id, cells=result.cells,
                                                    reason=result.reason).draft(
                result.camera, now_ns, "info", None, self.ref))
        return drafts

    def forget(self, sensor: str) -> None:
        self.stations.by_camera.pop(sensor, None)  # a learned normal is saved: it resumes if the camera returns

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


@dataclass(frozen=True)
class Verdict:
    """What decides a part: the heat map the decision is read from, and the station's part in it."""

    heat: np.ndarray
    score: float
    station: Literal["off", "learning", "ready"]
    novelty: float | None = None
    cause: Literal["defect", "novelty"] | None = None
    cells: np.ndarray | None = None  # the frame's cell features and the station's normal: a reject keeps
    normal: StationNormal | None = None  # its hottest cells for false-reject feedback


def part_id(item: SensorMessage) -> str:
    return str(item.meta.get("part_id", f"{item.sensor_id}-{item.seq}"))


def clip_box(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(x0, 0), max(y0, 0), min(x1, int(shape[1])), min(y1, int(shape[0]))

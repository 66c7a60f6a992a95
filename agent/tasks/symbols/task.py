"""Symbol detection: every music symbol on a photographed or scanned score page, with the Deep Watershed Detector.

The page is rescaled to the staff space the model learnt (estimated per page), cut into
overlapping tiles, each tile's three head maps are read without NMS (energy cut, connected
components, majority class, median size) and symbols are kept by the tile nearest their centre
(models/symbols/runtime).  One ``symbols_detected`` event per page; an overlay JPEG of the page
with the boxes is its attachment.  numpy, scipy and Pillow only: no torch at run time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import models
from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.frames import decode_frame, encode_jpeg
from agent.tasks.symbols import events
from agent.tasks.symbols.config import SymbolsConfig
from agent.tasks.symbols.simulate import PageSimulation
from agent.windowing import Window
from models.runtime import Manifest, Model
from models.symbols.runtime.pages import PageGeometry, PageResult, infer_page
from sensors.errors import ModelError
from sensors.wire import Kind, SensorMessage

DEFAULT_MODEL = Path(models.__file__).resolve().parent / "symbols" / "manifest.yaml"


def geometry_of(manifest: Manifest) -> PageGeometry:
    """The page geometry the model was exported with (its manifest's pre- and post-processing)."""
    try:
        return PageGeometry(staff_space=float(manifest.preprocessing["staff_space"]),
                            tile=int(manifest.preprocessing["tile"]),
                            overlap=int(manifest.preprocessing["overlap"]),
                            energy_cut=int(manifest.postprocessing["energy_cut"]),
                            min_pixels=int(manifest.postprocessing["min_pixels"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{manifest.path}: not a symbol detector's manifest ({error!r} missing or invalid)") from None


class SymbolsTask(Task[SymbolsConfig]):
    """Camera frames of score pages -> one ``symbols_detected`` event per page."""

    name = "symbols"
    kinds = frozenset({Kind.FRAME})
    config_type = SymbolsConfig
    events = events.EVENTS
    simulation = PageSimulation

    def __init__(self, config: SymbolsConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        self.model: Model = context.load_model(config.model or DEFAULT_MODEL)
        manifest = self.model.manifest
        self.geometry = geometry_of(manifest)
        self.classes = manifest.classes
        self.min_confidence = config.report_score if config.report_score is not None else float(
            manifest.thresholds.get("report_score", 0.0))
        self.ref = ModelRef(manifest.name, manifest.version)
        self.input_name = manifest.inputs[0].name

    @classmethod
    def check(cls, config: SymbolsConfig) -> None:
        """The manifest loads and is a symbol detector's."""
        from models.runtime import load_manifest

        geometry_of(load_manifest(config.model or DEFAULT_MODEL))

    def run_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        energy, classes, log_size = self.model.run({self.input_name: tiles})
        return energy, classes, log_size

    def read_page(self, image: np.ndarray) -> PageResult:
        """Every symbol on a grayscale page, in page pixels."""
        return infer_page(self.run_tiles, image, self.geometry, known_staff_space=self.config.staff_space)

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, SensorMessage):
            raise RejectedInput(f"symbols takes camera frames, got a {item.kind.name.lower()} window")
        if isinstance(item.data, np.ndarray):
            pixels = item.data.shape[0] * (item.data.shape[1] if item.data.ndim > 1 else 1)
        else:
            pixels = _declared_pixels(bytes(item.data))
        if pixels > self.config.max_pixels:
            raise RejectedInput(f"sensor {item.sensor_id} seq {item.seq}: page of {pixels} pixels exceeds "
                                f"max_pixels {self.config.max_pixels}")
        image = decode_frame(item, mode="L")
        result = self.read_page(image)
        found = result.detections
        keep = np.argsort(-found.scores)
        keep = keep[found.scores[keep] >= self.min_confidence]
        names = [self.classes[int(label)] if int(label) < len(self.classes) else str(int(label))
                 for label in found.labels[keep]]
        counts = dict(Counter(names).most_common())
        listed = [events.Symbol(symbol=name, box=[round(float(v), 1) for v in found.boxes[i]],
                                confidence=round(float(found.scores[i]), 3))
                  for name, i in zip(names[: self.config.max_listed], keep[: self.config.max_listed], strict=True)]
        body = events.SymbolsDetected(
            page_id=str(item.meta.get("page_id", f"{item.sensor_id}-{item.seq}")), total=len(names),
            summary=summary(counts), counts=counts,
            detections=listed, truncated=len(names) > len(listed), min_confidence=self.min_confidence,
            staff_space=None if result.staff_space is None else round(result.staff_space, 2), tiles=result.tiles,
            page=events.PageSize(width=int(image.shape[1]), height=int(image.shape[0])))
        attachment = self.overlay(image, found.boxes[keep]) if self.config.overlay else None
        return [body.draft(item.sensor_id, item.timestamp_ns, "info", float(len(names)), self.ref, attachment)]

    def overlay(self, image: np.ndarray, boxes: np.ndarray) -> bytes:
        """JPEG of the page, longer side at most ``overlay_side``, with every reported box in red."""
        page = Image.fromarray(image).convert("RGB")
        scale = min(1.0, self.config.overlay_side / max(page.size))
        if scale < 1.0:
            page = page.resize((max(int(page.width * scale), 1), max(int(page.height * scale), 1)))
        draw = ImageDraw.Draw(page)
        for x0, y0, x1, y1 in boxes * scale:
            draw.rectangle((float(x0), float(y0), float(max(x1, x0)), float(max(y1, y0))), outline=(255, 0, 0))
        return encode_jpeg(np.asarray(page), self.config.overlay_quality)

    def models(self) -> list[ModelRef]:
        return [self.ref]

    def close(self) -> None:
        self.model.close()


def summary(counts: dict[str, int], top: int = 4) -> str:
    """'N symbols: a x, b y, ...' for the ``top`` most common classes (counts ordered most common first)."""
    shown = ", ".join(f"{count} {name}" for name, count in list(counts.items())[:top])
    more = ", ..." if len(counts) > top else ""
    return f"{sum(counts.values())} symbols" + (f": {shown}{more}" if counts else "")


def _declared_pixels(payload: bytes) -> int:
    """Width x height from a JPEG or PNG header without decoding the pixels (0 when it cannot be read: the
    decoder then says what is wrong)."""
    import io

    try:
        with Image.open(io.BytesIO(payload)) as image:
            return int(image.width) * int(image.height)
    except Exception:
        return 0

"""Simulated inspection camera: JPEG frames of tube parts from the quality data generator, with ground truth.

Parts come from the generator's held-out "demo" split (defect sizes and shapes beyond the
training set included), one frame per part, deterministic from the seed.  The message carries
only what a real camera would send (pixels and ``meta["part_id"]``); the ground truth stays
in the simulator, looked up by part id.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from sensors.simulate.parts import LabelNoise, Part, PartGenerator
from sensors.wire import Encoding, Kind, SensorMessage


@dataclass(frozen=True)
class PartTruth:
    """What is really wrong with a part (the agent never sees this)."""

    part_id: str
    defective: bool
    kinds: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int], ...]


class CameraSimulator:
    """One camera station: frame ``i`` shows part ``i``; recent ground truth is kept by part id."""

    def __init__(self, sensor_id: str, defect_rate: float = 0.03, seed: int = 0, jpeg_quality: int = 90,
                 keep_truth: int = 10_000) -> None:
        self.sensor_id = sensor_id
        self.generator = PartGenerator(seed, defect_rate, LabelNoise(0.0, 0.0))
        self.jpeg_quality = jpeg_quality
        self.keep_truth = keep_truth
        self._truth: OrderedDict[str, PartTruth] = OrderedDict()

    def part_id(self, index: int) -> str:
        return f"{self.sensor_id}-P{index:06d}"

    def render(self, index: int) -> Part:
        """The part behind frame ``index`` (pixels, mask and defects)."""
        return self.generator.part("demo", index)

    def frame(self, index: int, timestamp_ns: int) -> SensorMessage:
        """Frame ``index`` as a JPEG camera message; records its ground truth."""
        part = self.render(index)
        part_id = self.part_id(index)
        self._truth[part_id] = PartTruth(part_id, part.defective, tuple(d.kind for d in part.defects),
                                         tuple(d.box for d in part.defects))
        while len(self._truth) > self.keep_truth:
            self._truth.popitem(last=False)
        buffer = io.BytesIO()
        Image.fromarray(part.image).save(buffer, format="JPEG", quality=self.jpeg_quality)
        return SensorMessage(self.sensor_id, Kind.FRAME, index, timestamp_ns, buffer.getvalue(), 0.0,
                             Encoding.JPEG, {"part_id": part_id})

    def truth(self, part_id: str) -> PartTruth:
        """Ground truth of a recently produced frame; KeyError when it is unknown or too old."""
        return self._truth[part_id]

    def stream(self, parts_per_s: float, start_ns: int, count: int | None = None) -> Iterator[SensorMessage]:
        """Frames stamped ``1 / parts_per_s`` apart from ``start_ns``; endless unless ``count`` is given."""
        index = 0
        while count is None or index < count:
            yield self.frame(index, start_ns + int(index * 1e9 / parts_per_s))
            index += 1


def camera_stream(sensor_id: str, parts_per_s: float, defect_rate: float, seed: int = 0,
                  start_ns: int = 1) -> Iterator[SensorMessage]:
    """The demo's camera: an endless, timestamped stream of part frames (see :class:`CameraSimulator`)."""
    return CameraSimulator(sensor_id, defect_rate, seed).stream(parts_per_s, start_ns)

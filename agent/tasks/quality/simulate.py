"""The demo's simulated camera stations: JPEG frames of tube parts, some with defects."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from agent.tasks.base import Simulation
from sensors.simulate.camera import camera_stream
from sensors.wire import SensorMessage


class CameraSimulation(Simulation):
    """Camera stations ``camera-00`` ..., each inspecting ``parts_per_s`` parts a second."""

    cameras: int = Field(default=1, ge=0, le=16, description="simulated camera stations")
    parts_per_s: float = Field(default=2.0, gt=0, le=100, description="parts per second per camera")
    defect_rate: float = Field(default=0.2, ge=0, le=1, description="share of defective parts (demo: high)")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        return [(f"camera-{station:02d}",
                 camera_stream(f"camera-{station:02d}", self.parts_per_s, self.defect_rate,
                               seed=seed + 100 + station, start_ns=start_ns))
                for station in range(self.cameras)]

"""The demo's entrance camera: enrolled staff and unknown visitors walk up to it (sensors/simulate/entrance.py)."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from agent.tasks.base import Simulation
from sensors.simulate.entrance import entrance_stream
from sensors.wire import SensorMessage


class EntranceSimulation(Simulation):
    """Entrance cameras ``door-00`` ...: 640x480 JPEG frames of people coming to the door, one or two at a time.
    The staff (Ada, Bjorn, Chidi, Mei) are enrolled in the demo gallery (sensors/simulate/data/faces)."""

    cameras: int = Field(default=1, ge=0, le=16, description="simulated entrance cameras")
    fps: float = Field(default=1.0, gt=0, le=30, description="frames per second per camera")
    staff_share: float = Field(default=0.6, ge=0, le=1, description="share of visits by enrolled staff")
    frames_per_visit: int = Field(default=8, ge=2, le=100, description="frames a person stays in view, about")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        return [(f"door-{index:02d}", entrance_stream(f"door-{index:02d}", seed + index, self.fps, self.staff_share,
                                                      start_ns, self.frames_per_visit))
                for index in range(self.cameras)]

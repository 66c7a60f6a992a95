"""The demo's simulated page station: a camera photographing score pages (shipped JPEGs), one every few seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

import sensors
from agent.tasks.base import Simulation
from sensors.wire import Encoding, Kind, SensorMessage

#: degraded photos of held-out composers' pages, written by ``python -m models.symbols.demo_pages``
PAGES = Path(sensors.__file__).resolve().parent / "simulate" / "data" / "pages"


def page_stream(sensor_id: str, every_s: float, start_ns: int) -> Iterator[SensorMessage]:
    """The shipped page photos in turn, forever, ``every_s`` apart."""
    photos = [path.read_bytes() for path in sorted(PAGES.glob("*.jpg"))]
    index = 0
    while photos:
        yield SensorMessage(sensor_id, Kind.FRAME, index, start_ns + int(index * every_s * 1e9),
                            photos[index % len(photos)], 0.0, Encoding.JPEG,
                            {"page_id": f"{sensor_id}-page{index:05d}"})
        index += 1


class PageSimulation(Simulation):
    """Page stations ``pages-00`` ..., each photographing a score page every ``every_s`` seconds."""

    stations: int = Field(default=1, ge=0, le=8, description="simulated page stations")
    every_s: float = Field(default=8.0, ge=0.5, le=3600, description="seconds between pages per station")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        return [(f"pages-{station:02d}", page_stream(f"pages-{station:02d}", self.every_s, start_ns))
                for station in range(self.stations)]

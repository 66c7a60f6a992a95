"""The simulated factory of the demo: a vibration fleet and camera stations, paced in real time.

Each stream yields encoded wire messages, so the demo exercises the same decode
path as live sensors.  Faulty machines get their fault onset ``fault_onset_s``
into the run and fail at ``failure_s``; the camera stations produce parts with a
configurable share of defects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from models.vibration.bearing import BearingGeometry
from sensors.simulate.vibration import FAULT_KINDS, RunSpec, VibrationSimulator, demo_run, make_fleet
from sensors.wire import SensorMessage, encode

if TYPE_CHECKING:
    from agent.config import SimulatorSourceConfig

CHUNK_S = 0.1
HEALTHY_RUN_S = 10 * 24 * 3600.0


def factory_streams(config: SimulatorSourceConfig, stop: threading.Event) -> list[tuple[str, Iterator[bytes]]]:
    """One paced stream of wire bytes per simulated sensor."""
    start_ns = time.time_ns()
    streams = []
    # the demo's machines carry the bearing the vibration task assumes by default, so that the
    # likely fault type it names can be checked against the simulated one
    fleet = make_fleet(config.machines, seed=config.seed, sample_rate=config.sample_rate, prefix="pump",
                       bearings=(BearingGeometry(),))
    for index, machine in enumerate(fleet):
        if index < config.faulty:
            run = demo_run(FAULT_KINDS[index % len(FAULT_KINDS)], demo_s=config.failure_s,
                           onset_demo_s=config.fault_onset_s, sample_rate=config.sample_rate)
        else:
            run = RunSpec(duration_s=HEALTHY_RUN_S, sample_rate=config.sample_rate)
        simulator = VibrationSimulator(machine, run, seed=config.seed + index)
        messages = simulator.messages(start_ns=start_ns, chunk_s=CHUNK_S)
        streams.append((machine.machine_id, paced(messages, start_ns, stop)))
    for station in range(config.cameras):
        from sensors.simulate.camera import camera_stream

        frames = camera_stream(f"camera-{station:02d}", config.parts_per_s, config.defect_rate,
                               seed=config.seed + 100 + station, start_ns=start_ns)
        streams.append((f"camera-{station:02d}", paced(frames, start_ns, stop)))
    return streams


def paced(messages: Iterable[SensorMessage], start_ns: int, stop: threading.Event) -> Iterator[bytes]:
    """Encode messages and release each at its timestamp (generation runs ahead, never behind)."""
    for message in messages:
        delay = (message.timestamp_ns - time.time_ns()) / 1e9
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        yield encode(message)

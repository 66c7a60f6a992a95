"""The demo's simulated pumps: a vibration fleet in which some machines develop bearing faults."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from agent.tasks.base import Simulation
from sensors.bearing import BearingGeometry
from sensors.simulate.vibration import FAULT_KINDS, RunSpec, VibrationSimulator, demo_run, make_fleet
from sensors.wire import SensorMessage

CHUNK_S = 0.1
HEALTHY_RUN_S = 10 * 24 * 3600.0


class VibrationSimulation(Simulation):
    """Simulated pumps ``pump-00`` ...; the first ``faulty`` develop bearing faults and fail."""

    machines: int = Field(default=3, ge=0, le=100, description="simulated vibration sensors")
    faulty: int = Field(default=1, ge=0, description="how many of them develop a bearing fault")
    sample_rate: float = Field(default=20_000, ge=1000, le=100_000, description="vibration sample rate, Hz")
    fault_onset_s: float = Field(default=60, ge=0, description="seconds after start when faults begin")
    failure_s: float = Field(default=150, gt=0, description="seconds after start when faulty machines fail")

    def streams(self, seed: int, start_ns: int) -> list[tuple[str, Iterator[SensorMessage]]]:
        # the demo's machines carry the default bearing geometry, which config/demo.yaml configures
        # (`bearing: {}`), so that the likely fault type the task names can be checked against the simulated one
        fleet = make_fleet(self.machines, seed=seed, sample_rate=self.sample_rate, prefix="pump",
                           bearings=(BearingGeometry(),))
        streams = []
        for index, machine in enumerate(fleet):
            if index < self.faulty:
                run = demo_run(FAULT_KINDS[index % len(FAULT_KINDS)], demo_s=self.failure_s,
                               onset_demo_s=self.fault_onset_s, sample_rate=self.sample_rate)
            else:
                run = RunSpec(duration_s=HEALTHY_RUN_S, sample_rate=self.sample_rate)
            simulator = VibrationSimulator(machine, run, seed=seed + index)
            streams.append((machine.machine_id, simulator.messages(start_ns=start_ns, chunk_s=CHUNK_S)))
        return streams

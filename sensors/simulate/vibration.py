"""A physically grounded vibration source for a fleet of rotating machines, with run-to-failure ground truth.

The signal of one accelerometer (g) on a bearing housing is the sum of

- shaft harmonics (1x unbalance, 2x misalignment, ...) following the instantaneous shaft speed,
  which may swing slowly and drops a little with load (motor slip);
- bearing fault impacts once per fault period (BPFO, BPFI or 2 x BSF from the bearing geometry,
  with a little random slip), each ringing a structural resonance (a two-pole resonator), and
  amplitude-modulated as the fault passes the load zone: not at all for an outer-race spall (it
  sits in the load zone), once per shaft turn for an inner-race spall, once per cage turn for a
  rolling-element spall;
- broadband noise, part white and part ringing the same resonance, and load changes at random
  times that scale everything;
- occasional sensor dropouts (flat-lined at 0) and electrical spikes.

A run is "life" time: a healthy stretch, a fault onset at a known time, severity growing as a power
law until failure.  Acquisition is continuous or in snapshots (1 s every 10 min as in the IMS
set).  ``time_scale`` (life seconds per stream second) compresses a run for a demo: a week-long
life in 3 minutes of stream, or a continuous 3-minute run whose onset is 60 s in.
Everything is deterministic from the seed (for a given ``chunk_s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import signal

from sensors.bearing import BearingGeometry
from sensors.files import write_json_atomic
from sensors.wire import Kind, SensorMessage

FaultKind = Literal["outer_race", "inner_race", "rolling_element"]
FAULT_KINDS: tuple[FaultKind, ...] = ("outer_race", "inner_race", "rolling_element")
#: bearings to draw a fleet from: IMS Rexnord ZA-2115, SKF 6205 (CWRU rig), SKF 6308, SKF 22210 (spherical)
BEARING_CATALOGUE = (
    BearingGeometry(),  # the default: IMS Rexnord ZA-2115
    BearingGeometry(9, 7.94, 39.04, 0.0),
    BearingGeometry(8, 15.0, 65.0, 0.0),
    BearingGeometry(14, 11.0, 70.0, 10.0),
)


@dataclass(frozen=True)
class MachineSpec:
    """One machine's normal state: speed, bearing, resonance, vibration levels, sensor habits."""

    machine_id: str = "machine-00"
    shaft_hz: float = 33.3
    #: relative amplitude of slow sinusoidal speed swings (0: constant speed) and their period
    speed_variation: float = 0.0
    speed_period_s: float = 40.0
    #: relative speed drop at full load (induction motor slip)
    load_slip: float = 0.02
    geometry: BearingGeometry = field(default_factory=BearingGeometry)
    #: amplitudes (g) of the shaft harmonics 1x, 2x, 3x, ...
    harmonics: tuple[float, ...] = (0.10, 0.04, 0.015)
    resonance_hz: float = 3500.0
    damping: float = 0.04
    #: white noise and resonance-ringing noise, RMS in g
    noise_g: float = 0.03
    structural_noise_g: float = 0.04
    #: peak impact amplitude (g) at full fault severity and full load
    impact_g: float = 2.0
    #: load level range and mean time between load changes (stream seconds)
    load_range: tuple[float, float] = (0.6, 1.0)
    load_change_s: float = 30.0
    #: mean number of dropouts per stream hour and their length; spikes per stream second, their size
    dropouts_per_hour: float = 1.0
    dropout_s: float = 1.5
    spikes_per_s: float = 0.005
    spike_g: float = 3.0
    #: sensor channels (e.g. x and y accelerometers) and the gain of the machine's vibration on each
    channel_gains: tuple[float, ...] = (1.0,)

    @property
    def channels(self) -> int:
        return len(self.channel_gains)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaultSpec:
    """A bearing fault: its kind, onset and failure (life seconds) and how its severity grows."""

    kind: FaultKind = "outer_race"
    onset_s: float = 60.0
    failure_s: float = 180.0
    #: severity at onset (fraction of full) and the exponent of its growth towards 1 at failure
    initial: float = 0.05
    exponent: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {FAULT_KINDS}")
        if not 0 <= self.onset_s < self.failure_s:
            raise ValueError(f"need 0 <= onset_s < failure_s, got {self.onset_s}, {self.failure_s}")

    def severity(self, life_s: float) -> float:
        """0 before onset, then ``initial`` growing to 1 at failure."""
        if life_s < self.onset_s:
            return 0.0
        progress = min(1.0, (life_s - self.onset_s) / (self.failure_s - self.onset_s))
        return self.initial + (1 - self.initial) * progress**self.exponent


@dataclass(frozen=True)
class Acquisition:
    """Continuous streaming, or snapshots of ``snapshot_s`` every ``interval_s`` life seconds."""

    mode: Literal["continuous", "snapshots"] = "continuous"
    snapshot_s: float = 1.0
    interval_s: float = 600.0


@dataclass(frozen=True)
class RunSpec:
    """One run: how long (life seconds), the fault if any, how it is acquired, the time compression."""

    duration_s: float = 180.0
    fault: FaultSpec | None = None
    acquisition: Acquisition = field(default_factory=Acquisition)
    #: life seconds per stream second (1: real time; 3360: a week in three minutes)
    time_scale: float = 1.0
    sample_rate: float = 20_000.0

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault.failure_s > self.duration_s + 1e-9:
            raise ValueError("the run ends before the fault's failure time; lengthen duration_s")
        if self.time_scale <= 0 or self.sample_rate <= 0:
            raise ValueError("time_scale and sample_rate must be positive")
        snapshots = self.acquisition
        if snapshots.mode == "snapshots" and snapshots.interval_s / self.time_scale < snapshots.snapshot_s:
            raise ValueError(f"snapshots of {snapshots.snapshot_s} s every {snapshots.interval_s} s compressed "
                             f"x{self.time_scale} would overlap in stream time")


@dataclass(frozen=True)
class Block:
    """A chunk of samples (float32, (n, channels)) with its life and stream start times."""

    life_s: float
    stream_s: float
    samples: np.ndarray
    snapshot: int


def run_to_failure(kind: FaultKind, onset_s: float, failure_s: float, **run: Any) -> RunSpec:
    """A run that ends at failure, with a fault of ``kind`` starting at ``onset_s``."""
    return RunSpec(duration_s=failure_s, fault=FaultSpec(kind, onset_s, failure_s), **run)


def demo_run(kind: FaultKind = "outer_race", demo_s: float = 180.0, onset_demo_s: float = 60.0,
             life_s: float | None = None, sample_rate: float = 20_000.0) -> RunSpec:
    """A continuous run compressed into ``demo_s`` of stream whose onset comes ``onset_demo_s`` in.

    ``life_s`` (default: the demo length) is the life the demo stands for; its ratio to ``demo_s``
    is the time scale, reported in the ground truth.
    """
    scale = (life_s or demo_s) / demo_s
    return run_to_failure(kind, onset_demo_s * scale, demo_s * scale, time_scale=scale,
                          sample_rate=sample_rate)


def make_fleet(count: int, seed: int = 0, sample_rate: float = 20_000.0, channels: int = 1,
               prefix: str = "machine", bearings: tuple[BearingGeometry, ...] = BEARING_CATALOGUE
               ) -> list[MachineSpec]:
    """``count`` machines, each with its own normal state, drawn deterministically from ``seed``.

    Bearings are drawn from ``bearings``; the demo passes ``(BearingGeometry(),)``, the geometry its
    agent config names with ``bearing: {}``, so the fault type the task names can be checked.
    """
    rng = np.random.default_rng(seed)
    nyquist = sample_rate / 2
    machines = []
    for index in range(count):
        resonance = float(np.clip(rng.uniform(2000, 6000), nyquist / 4, nyquist * 0.7))
        gains = (1.0, *np.round(rng.uniform(0.4, 0.9, size=channels - 1), 3))
        machines.append(MachineSpec(
            machine_id=f"{prefix}-{index:02d}",
            shaft_hz=round(float(rng.uniform(15, 50)), 2),
            speed_variation=float(rng.choice([0.0, 0.0, 0.03, 0.06])),
            speed_period_s=round(float(rng.uniform(20, 90)), 1),
            geometry=bearings[int(rng.integers(len(bearings)))],
            harmonics=tuple(round(float(a), 4) for a in
                            rng.uniform(0.04, 0.15) * np.array([1, rng.uniform(0.15, 0.8), rng.uniform(0.05, 0.4)])),
            resonance_hz=round(resonance, 1),
            damping=round(float(rng.uniform(0.02, 0.07)), 3),
            noise_g=round(float(rng.uniform(0.015, 0.05)), 4),
            structural_noise_g=round(float(rng.uniform(0.02, 0.06)), 4),
            impact_g=round(float(rng.uniform(1.0, 3.0)), 3),
            load_change_s=round(float(rng.uniform(15, 60)), 1),
            channel_gains=tuple(float(g) for g in gains),
        ))
    return machines


class _Resonator:
    """A two-pole resonator whose impulse response is exp(-zeta w t) sin(w_d t), peak about 1; stateful."""

    def __init__(self, frequency: float, damping: float, sample_rate: float) -> None:
        omega = 2 * math.pi * frequency / sample_rate
        radius = math.exp(-damping * omega)
        damped = omega * math.sqrt(1 - damping**2)
        self.b = np.array([0.0, radius * math.sin(damped)])
        self.a = np.array([1.0, -2 * radius * math.cos(damped), radius**2])
        #: input scale that gives white noise unit output variance
        self.noise_scale = math.sqrt(2 * (1 - radius**2)) / math.sin(damped)
        self.zi = np.zeros(2)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y, self.zi = signal.lfilter(self.b, self.a, x, zi=self.zi)
        return np.asarray(y)

    def reset(self) -> None:
        self.zi = np.zeros(2)


def _load_zone(angle_cycles: np.ndarray) -> np.ndarray:
    """Load distribution over the bearing (Stribeck, roller bearings): max at 0, none beyond +-90 deg."""
    return np.maximum(np.cos(2 * np.pi * angle_cycles), 0.0) ** 1.1


class VibrationSimulator:
    """Renders one machine's run as blocks of samples, wire messages, and ground truth."""

    def __init__(self, machine: MachineSpec, run: RunSpec, seed: int = 0) -> None:
        self.machine = machine
        self.run = run
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        fs = run.sample_rate
        if machine.resonance_hz >= fs / 2:
            raise ValueError(f"resonance {machine.resonance_hz} Hz is above Nyquist at {fs} Hz")
        self._impact_filter = _Resonator(machine.resonance_hz, machine.damping, fs)
        self._noise_filter = _Resonator(machine.resonance_hz, machine.damping, fs)
        self._harmonic_phases = self.rng.uniform(0, 1, len(machine.harmonics))
        self._speed_phase = float(self.rng.uniform(0, 1))
        self._fault_angle = float(self.rng.uniform(0, 1))
        self._restart(0.0)

    def _restart(self, stream_s: float) -> None:
        """Start a continuous stretch (the run, or one snapshot): fresh phases and filter states."""
        self._shaft_cycles = float(self.rng.uniform(0, 1))
        self._fault_cycles = float(self.rng.uniform(0, 1))
        self._impact_count = 0
        self._impact_filter.reset()
        self._noise_filter.reset()
        self._load = float(self.rng.uniform(*self.machine.load_range))
        self._next_load_change = stream_s + float(self.rng.exponential(self.machine.load_change_s))
        self._dropout_left = 0

    def severity(self, life_s: float) -> float:
        return self.run.fault.severity(life_s) if self.run.fault else 0.0

    def blocks(self, chunk_s: float = 0.1) -> Iterator[Block]:
        """The whole run as consecutive blocks of ``chunk_s`` (snapshots are cut into such blocks)."""
        run, fs = self.run, self.run.sample_rate
        chunk = max(1, round(chunk_s * fs))
        continuous = run.acquisition.mode == "continuous"
        if continuous:
            starts = [(0.0, run.duration_s / run.time_scale)]
        else:
            count = int(run.duration_s // run.acquisition.interval_s) + 1
            starts = [(k * run.acquisition.interval_s, run.acquisition.snapshot_s) for k in range(count)]
        for snapshot, (life_start, stream_length) in enumerate(starts):
            stream_start = life_start / run.time_scale
            self._restart(stream_start)
            total = round(stream_length * fs)
            for offset in range(0, total, chunk):
                stream_s = stream_start + offset / fs
                # Inside a snapshot life and stream run at the same pace; a continuous run is compressed.
                life_s = life_start + offset / fs * (run.time_scale if continuous else 1.0)
                samples = self._render(min(chunk, total - offset), stream_s, life_s)
                yield Block(life_s, stream_s, samples, snapshot)

    def snapshots(self) -> Iterator[tuple[float, np.ndarray]]:
        """Each snapshot (or each second of a continuous run) whole, with its life start time."""
        snapshots = self.run.acquisition.mode == "snapshots"
        for block in self.blocks(self.run.acquisition.snapshot_s if snapshots else 1.0):
            yield block.life_s, block.samples

    def messages(self, sensor_id: str | None = None, start_ns: int | None = None,
                 chunk_s: float = 0.1, first_seq: int = 0) -> Iterator[SensorMessage]:
        """The run as wire messages of ``chunk_s`` each, consecutive seq numbers, stream timestamps.

        Snapshots keep consecutive seq numbers (nothing is lost between them); their timestamps jump.
        """
        sensor = sensor_id or self.machine.machine_id
        start = start_ns if start_ns is not None else time.time_ns()
        for seq, block in enumerate(self.blocks(chunk_s), start=first_seq):
            yield SensorMessage(sensor, Kind.VIBRATION, seq, start + round(block.stream_s * 1e9),
                                block.samples, self.run.sample_rate)

    def ground_truth(self, sensor_id: str | None = None, start_ns: int = 0) -> dict[str, Any]:
        """Fault onset, type and failure in life seconds, stream seconds and (from start_ns) timestamps."""
        run, fault = self.run, self.run.fault

        def stream(life_s: float) -> dict[str, float | int]:
            return {"life_s": life_s, "stream_s": self.stream_time(life_s),
                    "time_ns": start_ns + round(self.stream_time(life_s) * 1e9)}

        return {
            "sensor_id": sensor_id or self.machine.machine_id,
            "seed": self.seed,
            "start_ns": start_ns,
            "sample_rate": run.sample_rate,
            "time_scale": run.time_scale,
            "duration": stream(run.duration_s),
            "acquisition": asdict(run.acquisition),
            "fault": None if fault is None else {
                "type": fault.kind, "onset": stream(fault.onset_s), "failure": stream(fault.failure_s),
                "initial_severity": fault.initial, "exponent": fault.exponent,
                "fault_frequencies_hz": self.machine.geometry.frequencies(self.machine.shaft_hz),
            },
            "machine": self.machine.to_dict(),
        }

    def stream_time(self, life_s: float) -> float:
        """Stream seconds from the start at which the given life time is (or would be) acquired."""
        acquisition = self.run.acquisition
        if acquisition.mode == "continuous":
            return life_s / self.run.time_scale
        # A life time between snapshots is first seen in the next snapshot.
        return math.ceil(life_s / acquisition.interval_s - 1e-9) * acquisition.interval_s / self.run.time_scale

    def write_ground_truth(self, path: str | Path, sensor_id: str | None = None, start_ns: int = 0) -> Path:
        """Write :meth:`ground_truth` as JSON (atomically), e.g. beside a recording."""
        return write_json_atomic(Path(path), self.ground_truth(sensor_id, start_ns))

    def _render(self, n: int, stream_s: float, life_s: float) -> np.ndarray:
        m, fs = self.machine, self.run.sample_rate
        t = stream_s + np.arange(n) / fs
        load = self._load_profile(t)
        speed = m.shaft_hz * (1 + m.speed_variation * np.sin(2 * np.pi * (t / m.speed_period_s + self._speed_phase)))
        speed *= 1 - m.load_slip * load
        cycles = self._shaft_cycles + np.cumsum(speed) / fs
        self._shaft_cycles = float(cycles[-1])
        severity = self.severity(life_s)
        # Wear loosens the machine and adds debris noise as the fault grows.
        wear = 1 + 1.5 * severity**2
        vibration = sum((a * wear * np.cos(2 * np.pi * (k * cycles + self._harmonic_phases[k - 1]))
                         for k, a in enumerate(m.harmonics, start=1)), np.zeros(n))
        vibration += load * self._impacts(n, cycles, speed, severity, load)
        white = self.rng.standard_normal(n) * self._noise_filter.noise_scale
        vibration += m.structural_noise_g * wear * self._noise_filter(white)
        out = vibration[:, None] * np.asarray(m.channel_gains)[None, :]
        out += m.noise_g * self.rng.standard_normal(out.shape)
        self._sensor_faults(out)
        return out.astype(np.float32)

    def _load_profile(self, t: np.ndarray) -> np.ndarray:
        """Piecewise-constant load; changes at exponentially distributed stream times."""
        load = np.full(len(t), self._load)
        while self._next_load_change <= t[-1]:
            self._load = float(self.rng.uniform(*self.machine.load_range))
            load[t >= self._next_load_change] = self._load
            self._next_load_change += float(self.rng.exponential(self.machine.load_change_s))
        return load

    def _impacts(self, n: int, cycles: np.ndarray, speed: np.ndarray, severity: float,
                 load: np.ndarray) -> np.ndarray:
        """Fault impacts ringing the resonance; zeros (but a running filter) while healthy."""
        fault, m = self.run.fault, self.machine
        impulses = np.zeros(n)
        if fault is not None and severity > 0:
            orders = m.geometry.orders()
            order = {"outer_race": orders["bpfo"], "inner_race": orders["bpfi"],
                     "rolling_element": 2 * orders["bsf"]}[fault.kind]
            slip = 1 + 0.01 * self.rng.standard_normal()
            events = self._fault_cycles + np.cumsum(order * slip * speed) / self.run.sample_rate
            hits = np.flatnonzero(np.diff(np.floor(np.concatenate(([self._fault_cycles], events)))) > 0)
            self._fault_cycles = float(events[-1])
            if fault.kind == "inner_race":
                modulation = _load_zone(cycles[hits] + self._fault_angle)
            elif fault.kind == "rolling_element":
                cage = cycles[hits] * orders["ftf"] + self._fault_angle
                # The spall strikes the inner and outer race in turn; the outer strike is the harder.
                strike = np.where((self._impact_count + np.arange(len(hits))) % 2 == 0, 1.0, 0.5)
                modulation = (0.2 + 0.8 * _load_zone(cage)) * strike
            else:
                modulation = np.ones(len(hits))
            self._impact_count += len(hits)
            scatter = np.maximum(0.0, 1 + 0.15 * self.rng.standard_normal(len(hits)))
            impulses[hits] = m.impact_g * severity * modulation * scatter
        return self._impact_filter(impulses)

    def _sensor_faults(self, out: np.ndarray) -> None:
        """Dropouts (flat zero on every channel) and single-sample electrical spikes, in place."""
        m, fs, n = self.machine, self.run.sample_rate, len(out)
        start = 0
        if self._dropout_left == 0 and self.rng.random() < m.dropouts_per_hour * n / fs / 3600:
            self._dropout_left = max(1, round(m.dropout_s * fs))
            start = int(self.rng.integers(n))
        if self._dropout_left:
            stop = min(n, start + self._dropout_left)
            out[start:stop] = 0.0
            self._dropout_left -= stop - start
        for _ in range(self.rng.poisson(m.spikes_per_s * n / fs)):
            out[self.rng.integers(n), self.rng.integers(out.shape[1])] += m.spike_g * self.rng.choice([-1, 1])


__all__ = [
    "BEARING_CATALOGUE", "FAULT_KINDS", "Acquisition", "Block", "FaultSpec", "MachineSpec", "RunSpec",
    "VibrationSimulator", "demo_run", "make_fleet", "run_to_failure",
]

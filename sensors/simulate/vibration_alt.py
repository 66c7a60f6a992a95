"""An independent vibration fleet generator, written from bearing physics apart from ours: tests and evaluation only.

Not used for training.  It shares no code or simplification with ``sensors/simulate/vibration.py``
(it was written without reading it), so that a score on its fleet says how the vibration task does on
machines it has never seen.  Per machine it draws:

- a bearing (ball count, ball and pitch diameter, contact angle: BPFO, BPFI, BSF, FTF follow), a shaft
  speed of 10-60 Hz with a slow drift (a sine of hours plus a random walk) and load-dependent slip;
- shaft harmonics, an optional gear mesh (tooth count x shaft) with sidebands at the shaft speed,
  electrical hum at the mains frequency (50 or 60 Hz) and twice it;
- two to four structural modes (1.5-9 kHz, damping 1-6 %), rung by the bearing impacts and, weakly,
  by broadband excitation; each channel sees the modes in its own proportions;
- pink (1/f) or brown (1/f^2) noise over a white sensor floor; sensor mounting (stud, adhesive or
  magnet: a mounted resonance that cuts the top of the band) and gain per channel;
- load steps every few hours to days (vibration and slip follow the load), electrical spikes and
  dropouts (stretches where the sensor reads a constant).

Faults start weak at an onset and grow exponentially to failure (severity ``initial`` x (1 / initial)
^ progress, with snapshot-to-snapshot scatter; late on, the noise floor rises too).  Impacts come at
BPFO (outer race, fixed in the load zone), BPFI (inner race, amplitude modulated once per shaft turn as
the defect passes the load zone) or 2 x BSF (a ball defect striking both races, modulated at the cage
speed FTF, alternate strikes unequal), with a small random slip of each impact; an unbalance grows the
1x line, a misalignment the 2x and 3x lines (no bearing fault frequency).

Acquisition is IMS style by default (1 s at 20 kHz, 2 channels, every 20 min, as snapshot-mode
messages: ``seq`` continuing across bursts, ``timestamp_ns`` jumping between them;
docs/wire-format.md), or a continuous stream (:meth:`AltSimulator.stream`).  :func:`agent_machines`
gives the fleet's bearing geometry and nominal shaft speed as the vibration task's ``machines:``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import signal

from sensors.wire import Kind, SensorMessage

AltFaultKind = Literal["outer_race", "inner_race", "ball", "unbalance", "misalignment"]
#: what the agent should name for each fault (None: not a bearing fault, no race should be named)
AGENT_FAULT: dict[str, str | None] = {"outer_race": "outer_race", "inner_race": "inner_race",
                                      "ball": "rolling_element", "unbalance": None, "misalignment": None}
DAY_S = 86_400.0
#: bearings an outside tester might meet: (balls, ball diameter, pitch diameter, contact angle) in mm, deg
CATALOGUE = ((7, 7.94, 33.5, 0.0), (8, 9.53, 39.0, 0.0), (9, 12.7, 53.5, 0.0), (10, 6.35, 30.0, 0.0),
             (11, 11.1, 60.0, 15.0), (12, 8.0, 46.0, 25.0), (13, 14.3, 78.0, 12.0), (15, 10.0, 70.0, 40.0),
             (18, 6.0, 64.0, 0.0), (20, 7.5, 90.0, 15.0))
LEAD_S = 0.1  # rendered before a snapshot so that the modes ring in from earlier impacts


@dataclass(frozen=True)
class AltBearing:
    """A rolling-element bearing's geometry (outer race fixed, inner race turning with the shaft)."""

    balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_deg: float

    def orders(self) -> dict[str, float]:
        """Characteristic frequencies per shaft turn: cage (ftf), ball spin (bsf), outer (bpfo), inner (bpfi)."""
        d_over_pd = self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_deg))
        return {"ftf": (1 - d_over_pd) / 2, "bsf": (1 - d_over_pd**2) * self.pitch_diameter / (2 * self.ball_diameter),
                "bpfo": self.balls * (1 - d_over_pd) / 2, "bpfi": self.balls * (1 + d_over_pd) / 2}

    def agent_config(self) -> dict[str, Any]:
        """The vibration task's ``bearing`` block for it."""
        return {"n_elements": self.balls, "element_diameter": self.ball_diameter,
                "pitch_diameter": self.pitch_diameter, "contact_angle_deg": self.contact_deg}


@dataclass(frozen=True)
class AltFault:
    """A fault of ``kind`` starting at ``onset_s`` (life seconds) at ``initial`` severity, 1 at ``failure_s``."""

    kind: AltFaultKind
    onset_s: float
    failure_s: float
    initial: float = 0.03

    def severity(self, life_s: float) -> float:
        if life_s < self.onset_s:
            return 0.0
        progress = min((life_s - self.onset_s) / (self.failure_s - self.onset_s), 1.0)
        return float(self.initial * (1 / self.initial) ** progress)


@dataclass(frozen=True)
class AltMachine:
    """One machine's physics and sensor habits, all drawn by :func:`alt_fleet`."""

    machine_id: str
    bearing: AltBearing
    shaft_hz: float
    drift: float  # relative amplitude of the slow speed swing
    drift_period_s: float
    slip: float  # relative speed drop at full load
    harmonics: tuple[float, float, float]  # 1x, 2x, 3x amplitudes, g
    gear_teeth: int  # 0: no gear
    gear_g: float
    mains_hz: float
    hum_g: float
    modes: tuple[tuple[float, float, float], ...]  # (Hz, damping ratio, gain)
    noise: Literal["pink", "brown"]
    noise_g: float
    floor_g: float
    gains: tuple[float, ...]  # per channel
    mounts: tuple[float, ...]  # per channel: mounted resonance, Hz (0: stud, flat)
    impact_g: float
    load_change_s: float
    spikes_per_s: float
    dropout_share: float  # share of snapshots (or seconds) with a dropout
    fault: AltFault | None = None
    days: float = 20.0


@dataclass(frozen=True)
class AltFleet:
    """What :func:`alt_fleet` draws: machines, run length, acquisition."""

    machines: int = 12
    faulty: int = 7  # six bearing faults (outer, inner, ball, twice) and an unbalance or misalignment
    days: float = 20.0
    seed: int = 13
    prefix: str = "alt"
    sample_rate: float = 20_000.0
    channels: int = 2
    snapshot_s: float = 1.0
    interval_s: float = 1200.0
    onset_share: tuple[float, float] = (0.3, 0.65)
    fault_kinds: tuple[AltFaultKind, ...] = ("outer_race", "inner_race", "ball", "inner_race", "ball",
                                             "outer_race", "unbalance")


def _draw_machine(rng: np.random.Generator, machine_id: str, fleet: AltFleet, fault_kind: str | None) -> AltMachine:
    balls, ball_d, pitch_d, angle = CATALOGUE[rng.integers(len(CATALOGUE))]
    shaft = float(rng.uniform(10, 60))
    modes = tuple((float(rng.uniform(1500, 9000)), float(rng.uniform(0.01, 0.06)), float(rng.uniform(0.4, 1.0)))
                  for _ in range(int(rng.integers(2, 5))))
    fault = None
    if fault_kind is not None:
        failure = fleet.days * DAY_S * float(rng.uniform(0.75, 1.0))
        onset = failure * float(rng.uniform(*fleet.onset_share))
        fault = AltFault(fault_kind, onset, failure, initial=float(rng.uniform(0.02, 0.05)))  # type: ignore[arg-type]
    return AltMachine(
        machine_id=machine_id, bearing=AltBearing(int(balls), ball_d, pitch_d, angle), shaft_hz=round(shaft, 2),
        drift=float(rng.uniform(0.0, 0.01)), drift_period_s=float(rng.uniform(2, 12)) * 3600,
        slip=float(rng.uniform(0.005, 0.02)),
        harmonics=(float(rng.uniform(0.02, 0.2)), float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.0, 0.04))),
        gear_teeth=int(rng.integers(15, 45)) if rng.random() < 0.6 else 0, gear_g=float(rng.uniform(0.02, 0.15)),
        mains_hz=float(rng.choice([50.0, 60.0])), hum_g=float(rng.uniform(0.005, 0.05)),
        modes=modes, noise=str(rng.choice(["pink", "brown"])),  # type: ignore[arg-type]
        noise_g=float(rng.uniform(0.02, 0.08)), floor_g=float(rng.uniform(0.005, 0.02)),
        gains=tuple(float(rng.uniform(0.5, 2.0)) for _ in range(fleet.channels)),
        mounts=tuple(float(rng.choice([0.0, rng.uniform(4000, 8000), rng.uniform(2500, 5000)]))
                     for _ in range(fleet.channels)),
        impact_g=float(rng.uniform(1.0, 4.0)), load_change_s=float(rng.uniform(4, 48)) * 3600,
        spikes_per_s=float(rng.uniform(0.0, 0.02)), dropout_share=float(rng.uniform(0.0, 0.02)),
        fault=fault, days=fleet.days if fault is None else fault.failure_s / DAY_S)


def alt_fleet(fleet: AltFleet | None = None) -> list[AltMachine]:
    """The fleet's machines, deterministic from ``fleet.seed``; the first ``faulty`` develop a fault."""
    fleet = fleet or AltFleet()
    rng = np.random.default_rng(fleet.seed)
    machines = []
    for index in range(fleet.machines):
        kind = fleet.fault_kinds[index % len(fleet.fault_kinds)] if index < fleet.faulty else None
        machines.append(_draw_machine(rng, f"{fleet.prefix}-{index:02d}", fleet, kind))
    return machines


def agent_machines(machines: list[AltMachine], shaft: bool = True, mode: str = "snapshot") -> dict[str, Any]:
    """The vibration task's ``machines:`` for the fleet: each machine's bearing, nominal shaft speed and mode."""
    return {m.machine_id: {"bearing": m.bearing.agent_config(), **({"shaft_hz": m.shaft_hz} if shaft else {}),
                           "mode": mode} for m in machines}


def ground_truth(machine: AltMachine) -> dict[str, Any]:
    """Fault kind, onset and failure (life days), and the characteristic frequencies at the nominal speed."""
    fault = machine.fault
    return {"machine": machine.machine_id, "fault": None if fault is None else fault.kind,
            "agent_fault": None if fault is None else AGENT_FAULT[fault.kind],
            "onset_day": None if fault is None else fault.onset_s / DAY_S,
            "failure_day": None if fault is None else fault.failure_s / DAY_S,
            "shaft_hz": machine.shaft_hz, "bearing": asdict(machine.bearing),
            "frequencies_hz": {k: v * machine.shaft_hz for k, v in machine.bearing.orders().items()}}


@dataclass
class _State:
    """What carries from one rendered block to the next (a continuous stream): phases and filter states."""

    shaft_phase: float = 0.0
    fault_phase: float = 0.0
    zi: dict[str, np.ndarray] = field(default_factory=dict)


class AltSimulator:
    """Renders one machine's snapshots or continuous stream, deterministic from the seed."""

    def __init__(self, machine: AltMachine, fleet: AltFleet | None = None, seed: int = 0) -> None:
        self.machine = machine
        self.fleet = fleet or AltFleet()
        self.seed = seed
        fs = self.fleet.sample_rate
        self.mode_filters = [_resonator(hz, zeta, fs) for hz, zeta, _ in machine.modes]
        self.mount_filters = [None if hz <= 0 or hz >= 0.45 * fs else signal.butter(2, hz, fs=fs)
                              for hz in machine.mounts]
        rng = np.random.default_rng([seed, 1])
        self.participation = rng.uniform(0.2, 1.0, size=(self.fleet.channels, len(machine.modes)))
        self.load_levels = rng.uniform(0.4, 1.0, size=int(machine.days * DAY_S / machine.load_change_s) + 2)
        self.drift_walk = np.cumsum(rng.normal(0, machine.drift / 3, size=int(machine.days * 24) + 2))

    def load(self, life_s: float) -> float:
        return float(self.load_levels[int(life_s / self.machine.load_change_s)])

    def speed(self, life_s: np.ndarray) -> np.ndarray:
        """Shaft speed, Hz: nominal, slow sine and random-walk drift, minus load slip."""
        m = self.machine
        hour = np.clip((life_s / 3600).astype(int), 0, len(self.drift_walk) - 1)
        swing = m.drift * np.sin(2 * np.pi * life_s / m.drift_period_s) + np.clip(self.drift_walk[hour], -0.02, 0.02)
        return m.shaft_hz * (1 + swing) * (1 - m.slip * self.load(float(life_s[0])))

    def render(self, life_s: float, seconds: float, rng: np.random.Generator, state: _State) -> np.ndarray:
        """``seconds`` of samples from ``life_s`` on, float32 (n, channels), continuing ``state``."""
        m, fs = self.machine, self.fleet.sample_rate
        n = round(seconds * fs)
        t = life_s + np.arange(n) / fs
        load = self.load(life_s)
        scale = 0.6 + 0.5 * load
        shaft = self.speed(t)
        theta = state.shaft_phase + 2 * np.pi * np.cumsum(shaft) / fs
        state.shaft_phase = float(theta[-1] % (2 * np.pi))
        severity = 0.0 if m.fault is None else m.fault.severity(life_s) * float(np.exp(rng.normal(0, 0.2)))
        kind = None if m.fault is None else m.fault.kind
        h1, h2, h3 = m.harmonics
        if kind == "unbalance":
            h1 *= 1 + 6 * severity
        elif kind == "misalignment":
            h2, h3 = h2 * (1 + 8 * severity), h3 + 0.1 * severity
        tonal = h1 * np.sin(theta) + h2 * np.sin(2 * theta + 0.7) + h3 * np.sin(3 * theta + 1.9)
        if m.gear_teeth:
            tonal += m.gear_g * (1 + 0.3 * np.cos(theta)) * np.sin(m.gear_teeth * theta)
        tonal += m.hum_g * (np.sin(2 * np.pi * m.mains_hz * t) + 0.6 * np.sin(4 * np.pi * m.mains_hz * t + 0.4))
        impulses = self._impacts(theta, shaft, severity, kind, rng, state) * m.impact_g * scale
        excitation = impulses + rng.normal(0, 0.15 * (1 + 2 * severity**2), n)
        out = np.empty((n, self.fleet.channels), dtype=np.float32)
        noise = self._coloured(rng.normal(0, 1, n), state) * m.noise_g * (1 + severity**2)
        for channel in range(self.fleet.channels):
            structure = np.zeros(n)
            for index, (b, a) in enumerate(self.mode_filters):
                key = f"mode{index}.{channel}"
                ringing, state.zi[key] = signal.lfilter(b, a, excitation, zi=state.zi.get(key, np.zeros(2)))
                structure += m.modes[index][2] * self.participation[channel, index] * ringing
            x = scale * (tonal * (1.0 if channel == 0 else 0.7) + noise) + structure
            mount = self.mount_filters[channel]
            if mount is not None:
                key = f"mount.{channel}"
                x, state.zi[key] = signal.lfilter(*mount, x, zi=state.zi.get(key, np.zeros(2)))
            out[:, channel] = m.gains[channel] * x + rng.normal(0, m.floor_g, n)
        return self._sensor_faults(out, rng)

    def _impacts(self, theta: np.ndarray, shaft: np.ndarray, severity: float, kind: str | None,
                 rng: np.random.Generator, state: _State) -> np.ndarray:
        """A unit impulse train at the fault's rate (with slip), amplitude-modulated as the fault travels."""
        n = len(theta)
        train = np.zeros(n)
        if severity <= 0 or kind not in ("outer_race", "inner_race", "ball"):
            return train
        orders = self.machine.bearing.orders()
        order = {"outer_race": orders["bpfo"], "inner_race": orders["bpfi"], "ball": 2 * orders["bsf"]}[kind]
        rate = order * shaft * (1 + rng.normal(0, 0.01))  # bearing slip: a little off the kinematic rate
        phase = state.fault_phase + np.cumsum(rate) / self.fleet.sample_rate
        state.fault_phase = float(phase[-1] % 1.0)
        hits = np.flatnonzero(np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0)
        hits = np.clip(hits + rng.integers(-2, 3, size=len(hits)), 0, n - 1)  # timing jitter
        if kind == "inner_race":  # the defect turns with the shaft: strong only in the load zone
            gain = 0.15 + np.maximum(np.cos(theta[hits]), 0.0) ** 1.5
        elif kind == "ball":  # the ball travels with the cage through the load zone; alternate races differ
            cage = orders["ftf"] * theta[hits]
            gain = (0.2 + np.maximum(np.cos(cage), 0.0)) * np.where(np.arange(len(hits)) % 2, 0.6, 1.0)
        else:  # a stationary outer-race defect sits in the load zone
            gain = np.ones(len(hits))
        train[hits] = severity * gain * rng.uniform(0.8, 1.2, len(hits)) * 4.0
        return train

    def _coloured(self, white: np.ndarray, state: _State) -> np.ndarray:
        if self.machine.noise == "pink":  # Kellet's three-pole 1/f approximation
            b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
            a = [1.0, -2.494956002, 2.017265875, -0.522189400]
            y, state.zi["pink"] = signal.lfilter(b, a, white, zi=state.zi.get("pink", np.zeros(3)))
            return y * 8.0
        y, state.zi["brown"] = signal.lfilter([1.0], [1.0, -0.995], white, zi=state.zi.get("brown", np.zeros(1)))
        return y * 0.1

    def _sensor_faults(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Electrical spikes, and now and then a dropout (the sensor holds a constant)."""
        n = len(out)
        seconds = n / self.fleet.sample_rate
        for _ in range(rng.poisson(self.machine.spikes_per_s * seconds)):
            out[rng.integers(n), :] += float(rng.choice([-1, 1])) * rng.uniform(5, 15)
        if rng.random() < self.machine.dropout_share * seconds:
            start = int(rng.integers(n))
            out[start:start + int(rng.uniform(0.05, 0.3) * self.fleet.sample_rate)] = out[start]
        return out

    def snapshot_times(self) -> np.ndarray:
        """Life seconds at which snapshots start: every ``interval_s`` (a few seconds of jitter) until failure."""
        rng = np.random.default_rng([self.seed, 2])
        count = int(self.machine.days * DAY_S // self.fleet.interval_s)
        return np.arange(count) * self.fleet.interval_s + rng.uniform(0, 5, count)

    def snapshots(self) -> Iterator[tuple[float, np.ndarray]]:
        """Each snapshot as (life seconds, float32 (samples, channels))."""
        for index, start in enumerate(self.snapshot_times()):
            rng = np.random.default_rng([self.seed, 3, index])
            state = _State(shaft_phase=float(rng.uniform(0, 2 * np.pi)), fault_phase=float(rng.uniform()))
            lead = int(LEAD_S * self.fleet.sample_rate)
            block = self.render(float(start) - LEAD_S, LEAD_S + self.fleet.snapshot_s, rng, state)
            yield float(start), block[lead:]

    def stream(self, seconds: float, start_life_s: float = 0.0,
               block_s: float = 1.0) -> Iterator[tuple[float, np.ndarray]]:
        """A continuous stream of ``seconds`` from ``start_life_s``, in contiguous blocks of ``block_s``."""
        state = _State()
        for index in range(round(seconds / block_s)):
            life = start_life_s + index * block_s
            yield life, self.render(life, block_s, np.random.default_rng([self.seed, 4, index]), state)

    def messages(self, start_ns: int = 1_700_000_000_000_000_000, chunk_s: float = 0.1,
                 blocks: Iterator[tuple[float, np.ndarray]] | None = None) -> Iterator[SensorMessage]:
        """Snapshots (or ``blocks``) as wire messages of ``chunk_s``: seq goes on across bursts, time jumps."""
        fs = self.fleet.sample_rate
        chunk = round(chunk_s * fs)
        seq = 0
        for life, samples in (self.snapshots() if blocks is None else blocks):
            for offset in range(0, len(samples) - chunk + 1, chunk):
                yield SensorMessage(self.machine.machine_id, Kind.VIBRATION, seq,
                                    start_ns + round((life + offset / fs) * 1e9),
                                    np.ascontiguousarray(samples[offset:offset + chunk]), fs)
                seq += 1


def _resonator(hz: float, zeta: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """A two-pole structural mode at ``hz`` with damping ratio ``zeta``, unit peak-ish gain."""
    radius = math.exp(-zeta * 2 * math.pi * hz / fs)
    a = np.array([1.0, -2 * radius * math.cos(2 * math.pi * hz / fs), radius**2])
    return np.array([1.0 - radius]), a

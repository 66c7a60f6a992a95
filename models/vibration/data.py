"""Simulated run-to-failure fleets as per-snapshot feature matrices, cached on disk (training and evaluation)."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.vibration.runtime import features as features_module
from models.vibration.runtime import shaft as shaft_module
from models.vibration.runtime.features import (
    SELECTED_FEATURES,
    FeatureSettings,
    column_index,
    feature_names,
    prepare_windows,
)
from sensors.simulate import vibration as simulator_module
from sensors.simulate.vibration import (
    FAULT_KINDS,
    Acquisition,
    FaultSpec,
    MachineSpec,
    RunSpec,
    VibrationSimulator,
    make_fleet,
)

DAY_S = 86_400.0
#: snapshots per feature-extraction call (bounds memory: 64 x 1 s x 20 kHz x 8 bytes)
EXTRACT_BATCH = 64


@dataclass(frozen=True)
class FleetConfig:
    """A fleet of machines run in IMS style (short snapshots at long intervals), some to failure."""

    machines: int = 20
    seed: int = 0
    prefix: str = "machine"
    #: share of machines that develop a bearing fault (kinds cycle through outer, inner, element)
    faulty_share: float = 0.5
    #: life of each machine in days, drawn uniformly; a faulty one fails at the end of it
    days: tuple[float, float] = (30.0, 40.0)
    #: fault onset as a share of the life, drawn uniformly
    onset_share: tuple[float, float] = (0.4, 0.7)
    #: severity at onset (share of full) and the exponent of its growth, drawn uniformly
    initial_severity: tuple[float, float] = (0.03, 0.08)
    growth_exponent: tuple[float, float] = (1.5, 3.0)
    interval_s: float = 1200.0
    snapshot_s: float = 1.0
    sample_rate: float = 20_000.0
    channels: int = 1

    @property
    def feature_names(self) -> list[str]:
        """Flat names of the monitored features: those tsfresh selected, as the agent's default."""
        return feature_names(self.channels, SELECTED_FEATURES)


@dataclass(frozen=True)
class MachineRun:
    """One machine of a fleet: its normal state, its run (fault or not) and the simulator seed."""

    machine: MachineSpec
    run: RunSpec
    seed: int


@dataclass
class MachineData:
    """A machine's feature vectors, one per snapshot, with the ground truth in days."""

    machine_id: str
    days: np.ndarray
    features: np.ndarray
    fault: str | None
    onset_day: float | None
    failure_day: float | None

    @property
    def healthy(self) -> np.ndarray:
        """Mask of the snapshots taken before any fault onset."""
        return self.days < self.onset_day if self.onset_day is not None else np.ones(len(self.days), bool)


def fleet_runs(config: FleetConfig) -> list[MachineRun]:
    """The fleet's machines and runs, deterministic from ``config.seed``."""
    rng = np.random.default_rng([config.seed, 1])
    machines = make_fleet(config.machines, seed=config.seed, sample_rate=config.sample_rate,
                          channels=config.channels, prefix=config.prefix)
    faulty = set(rng.permutation(config.machines)[: round(config.faulty_share * config.machines)].tolist())
    acquisition = Acquisition("snapshots", config.snapshot_s, config.interval_s)
    runs = []
    for index, machine in enumerate(machines):
        life_s = float(rng.uniform(*config.days)) * DAY_S
        draws = [float(rng.uniform(*span)) for span in
                 (config.onset_share, config.initial_severity, config.growth_exponent)]
        fault = None
        if index in faulty:
            kind = FAULT_KINDS[len([i for i in faulty if i < index]) % len(FAULT_KINDS)]
            fault = FaultSpec(kind, draws[0] * life_s, life_s, initial=draws[1], exponent=draws[2])
        run = RunSpec(duration_s=life_s, fault=fault, acquisition=acquisition, sample_rate=config.sample_rate)
        runs.append(MachineRun(machine, run, seed=config.seed * 1000 + index))
    return runs


def _code_fingerprint() -> str:
    """Hash of the simulator, feature and shaft speed code, so a change to any invalidates cached features."""
    digest = hashlib.sha256()
    for module in (simulator_module, features_module, shaft_module):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def _cache_key(entry: MachineRun) -> str:
    spec = {"machine": asdict(entry.machine), "run": asdict(entry.run), "seed": entry.seed,
            "code": _code_fingerprint()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def simulate_features(entry: MachineRun) -> tuple[np.ndarray, np.ndarray]:
    """Render every snapshot of a run and extract its features: (life seconds, (n, n_features)).

    Snapshots the agent would reject (sensor dropouts) are left out, as they are at run time.
    """
    simulator = VibrationSimulator(entry.machine, entry.run, seed=entry.seed)
    settings = FeatureSettings(geometry=entry.machine.geometry)
    times: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    batch: list[tuple[float, np.ndarray]] = []
    snapshots = simulator.snapshots()
    while batch := list(itertools.islice(snapshots, EXTRACT_BATCH)):
        values, _, usable = prepare_windows(np.stack([samples for _, samples in batch]),
                                            entry.run.sample_rate, settings)
        times.append(np.array([life_s for life_s, _ in batch])[usable])
        rows.append(values)
    return np.concatenate(times), np.concatenate(rows)


def machine_data(entry: MachineRun, cache_dir: Path | None, names: list[str] | None = None) -> MachineData:
    """A machine's features (``names``, default all), read from ``cache_dir`` when this exact run was
    simulated before (the cache holds every feature)."""
    path = cache_dir / f"{entry.machine.machine_id}-{_cache_key(entry)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as cached:
            times, values = cached["times"], cached["features"]
    else:
        times, values = simulate_features(entry)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, times=times, features=values)
    fault = entry.run.fault
    return MachineData(
        machine_id=entry.machine.machine_id,
        days=times / DAY_S,
        features=values if names is None else values[:, column_index(entry.machine.channels, names)],
        fault=fault.kind if fault else None,
        onset_day=fault.onset_s / DAY_S if fault else None,
        failure_day=fault.failure_s / DAY_S if fault else None,
    )


def fleet_data(config: FleetConfig, cache_dir: Path | None) -> Iterator[MachineData]:
    """Every machine of the fleet with its monitored features, simulated (or read from the cache) one at a time."""
    for entry in fleet_runs(config):
        yield machine_data(entry, cache_dir, config.feature_names)


"""How well the per-window shaft speed estimate finds the true speed, on both generators.

``python -m models.vibration.shaft_accuracy [--per-machine N]`` renders N snapshots spread over each
machine's life (healthy and faulty) of our test fleet (``sensors/simulate/vibration.py``) and of the
independent fleet (``sensors/simulate/vibration_alt.py``), both of which know the true mean shaft speed
of every snapshot, runs :func:`~models.vibration.runtime.features.estimate_shaft` on them and reports
the share within 2 % of the truth and the kinds of error: half or double the speed, the mains hum
(50/60 Hz or twice it), other.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace

import numpy as np
from scipy import fft

from models.vibration.data import fleet_runs
from models.vibration.evaluate import FLEETS
from models.vibration.runtime.features import FeatureSettings, remove_spikes
from models.vibration.runtime.shaft import estimate_shaft
from sensors.simulate.vibration import Acquisition, VibrationSimulator
from sensors.simulate.vibration_alt import LEAD_S, AltFleet, AltSimulator, _State, alt_fleet

#: an estimate within this share of the true speed is right
TOLERANCE = 0.02


class _TracedSimulator(VibrationSimulator):
    """Our simulator, recording each rendered block's mean shaft speed (shaft turns over the block)."""

    speeds: list[float]

    def _render(self, n: int, stream_s: float, life_s: float) -> np.ndarray:
        start = self._shaft_cycles
        out = super()._render(n, stream_s, life_s)
        self.speeds.append((self._shaft_cycles - start) * self.run.sample_rate / n)
        return out


def own_windows(per_machine: int) -> tuple[list[np.ndarray], list[float], list[str]]:
    """``per_machine`` snapshots spread evenly over each test-fleet machine's life, with true speeds."""
    windows, truth, machines = [], [], []
    for entry in fleet_runs(FLEETS["test"]):
        interval = entry.run.duration_s / per_machine
        run = replace(entry.run, acquisition=Acquisition("snapshots", entry.run.acquisition.snapshot_s, interval))
        simulator = _TracedSimulator(entry.machine, run, seed=entry.seed)
        simulator.speeds = []
        for _, samples in simulator.snapshots():
            windows.append(samples)
            machines.append(entry.machine.machine_id)
        truth.extend(simulator.speeds)
    return windows, truth, machines


def alt_windows(per_machine: int, seed: int = AltFleet.seed
                ) -> tuple[list[np.ndarray], list[float], list[str], list[float]]:
    """The same for the independent fleet (``seed``: 13 is the evaluation's), rendered as its snapshots
    are; also each machine's mains Hz."""
    fleet = AltFleet(seed=seed)
    windows, truth, machines, mains = [], [], [], []
    for index, machine in enumerate(alt_fleet(fleet)):
        simulator = AltSimulator(machine, fleet, seed=index)
        times = simulator.snapshot_times()
        fs = fleet.sample_rate
        for k in np.linspace(0, len(times) - 1, per_machine).astype(int):
            rng = np.random.default_rng([index, 3, int(k)])
            state = _State(shaft_phase=float(rng.uniform(0, 2 * np.pi)), fault_phase=float(rng.uniform()))
            block = simulator.render(float(times[k]) - LEAD_S, LEAD_S + fleet.snapshot_s, rng, state)
            windows.append(block[int(LEAD_S * fs):])
            t = times[k] + np.arange(int(fleet.snapshot_s * fs)) / fs
            truth.append(float(simulator.speed(t).mean()))
            machines.append(machine.machine_id)
            mains.append(machine.mains_hz)
    return windows, truth, machines, mains


def classify(estimate: np.ndarray, truth: np.ndarray, mains: np.ndarray | None = None) -> list[str]:
    """Each estimate as right, off (2-5 % out: imprecise), mains (within 0.5 Hz of the hum or twice it),
    half or double (within 1.5 Hz: the old sub-harmonic rule took the strongest of three bins), or other."""
    kinds = []
    for index, (value, true) in enumerate(zip(estimate, truth, strict=True)):
        hum = (50.0, 60.0) if mains is None else (float(mains[index]),)
        if abs(value / true - 1) <= TOLERANCE:
            kinds.append("right")
        elif abs(value / true - 1) <= 0.05:
            kinds.append("off")
        elif any(abs(value - k * h) <= 0.5 for h in hum for k in (1, 2)):
            kinds.append("mains")
        elif abs(value - true / 2) <= 1.5:
            kinds.append("half")
        elif abs(value - 2 * true) <= 1.5:
            kinds.append("double")
        else:
            kinds.append("other")
    return kinds


def estimate(windows: list[np.ndarray], sample_rate: float) -> np.ndarray:
    """The run-time estimate, on the despiked windows' summed channel power as :func:`extract_windows` does."""
    cleaned, _ = remove_spikes(np.stack(windows))
    x = np.swapaxes(cleaned, 1, 2).astype(np.float64)
    return estimate_shaft(fft.rfft(x, axis=-1), sample_rate / x.shape[-1], FeatureSettings().shaft_range_hz)


def summary(kinds: list[str], machines: list[str]) -> dict[str, object]:
    counts = Counter(kinds)
    wrong = Counter(m for m, k in zip(machines, kinds, strict=True) if k != "right")
    return {"windows": len(kinds), "right": round(counts["right"] / len(kinds), 3),
            "errors": {k: counts[k] for k in ("off", "half", "double", "mains", "other")},
            "machines_with_errors": dict(sorted(wrong.items()))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-machine", type=int, default=25)
    parser.add_argument("--alt-seed", type=int, default=AltFleet.seed,
                        help="seed of the independent fleet (13: the one the fleet evaluation uses)")
    args = parser.parse_args(argv)
    own, own_truth, own_machines = own_windows(args.per_machine)
    alt, alt_truth, alt_machines, mains = alt_windows(args.per_machine, args.alt_seed)
    result = {
        "own": summary(classify(estimate(own, 20_000.0), np.array(own_truth)), own_machines),
        "alt": summary(classify(estimate(alt, AltFleet().sample_rate), np.array(alt_truth), np.array(mains)),
                       alt_machines),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

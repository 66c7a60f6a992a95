"""Evaluate every anomaly scorer side by side on a held-out simulated run-to-failure fleet.

    python -m models.vibration.evaluate                     # the held-out test fleet
    python -m models.vibration.evaluate --fleet validation  # the fleet used for tuning

Each machine's snapshots go through :class:`models.vibration.runtime.monitor.MachineMonitor` (the agent's own
normalisation, threshold and alarm logic) once per scorer, with the monitor settings recorded in the
model's manifest (``thresholds``; ``--agent-defaults`` uses MonitorSettings() instead).  Reported per
scorer: detection delay after fault onset, faults missed, false alarms per machine-day on healthy
stretches, and the median delay as a share of the onset-to-failure time; plus a PNG grid of score
over time per machine and a JSON file.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import Model, load_manifest, load_model
from models.vibration.data import DAY_S, FleetConfig, MachineData, fleet_data
from models.vibration.runtime.monitor import MachineMonitor, MonitorSettings
from models.vibration.runtime.scorers import SCORERS, Scorer, make_scorer

#: the held-out fleet (never used for training or tuning) and the validation fleet used for tuning
FLEETS = {
    "test": FleetConfig(machines=20, seed=2026, prefix="test", days=(30.0, 40.0)),
    "validation": FleetConfig(machines=24, seed=77, prefix="val", days=(30.0, 40.0)),
}
DEFAULT_MANIFEST = Path("models/vibration/manifest.yaml")


@dataclass
class MachineResult:
    """One scorer on one machine: its trace, its alarm state, and what they mean against the truth."""

    machine: str
    method: str
    fault: str | None
    onset_day: float | None
    failure_day: float | None
    learn_end_day: float
    days: np.ndarray
    excess: np.ndarray
    active: np.ndarray

    @property
    def raised_days(self) -> np.ndarray:
        """Times at which an alarm was raised (rising edges of the alarm state)."""
        rising = self.active & ~np.concatenate([[False], self.active[:-1]])
        return self.days[rising]

    @property
    def healthy_end_day(self) -> float:
        return self.onset_day if self.onset_day is not None else float(self.days[-1])

    @property
    def false_alarms(self) -> int:
        """Alarms raised while the machine was still healthy (before any fault onset)."""
        return int(np.sum(self.raised_days < self.healthy_end_day))

    @property
    def healthy_days(self) -> float:
        """Machine-days on which a false alarm could have been raised: healthy and past the baseline."""
        return max(self.healthy_end_day - self.learn_end_day, 0.0)

    @property
    def delay_days(self) -> float | None:
        """Days from fault onset to the first snapshot with the alarm on; None if missed or healthy."""
        if self.onset_day is None:
            return None
        on = self.active & (self.days >= self.onset_day)
        return float(self.days[np.argmax(on)] - self.onset_day) if on.any() else None

    @property
    def delay_share(self) -> float | None:
        """Detection delay as a share of the onset-to-failure time."""
        if self.delay_days is None or self.onset_day is None:
            return None
        end = self.failure_day if self.failure_day is not None else float(self.days[-1])
        return self.delay_days / max(end - self.onset_day, 1e-9)

    def summary(self) -> dict[str, Any]:
        return {"fault": self.fault, "onset_day": self.onset_day, "failure_day": self.failure_day,
                "delay_days": self.delay_days, "delay_share": self.delay_share,
                "false_alarms": self.false_alarms, "healthy_days": round(self.healthy_days, 3),
                "raised_days": [round(float(day), 3) for day in self.raised_days]}


def run_monitor(data: MachineData, names: list[str], method: str, factory: Callable[[], Scorer],
                settings: MonitorSettings) -> MachineResult:
    """Feed every snapshot of one machine through a fresh monitor with the given scorer."""
    monitor = MachineMonitor(data.machine_id, names, factory, settings)
    excess = np.full(len(data.days), np.nan)
    active = np.zeros(len(data.days), dtype=bool)
    for index, (day, row) in enumerate(zip(data.days, data.features, strict=True)):
        decision = monitor.update(row, round(day * DAY_S * 1e9))
        if decision.phase == "monitoring" and decision.score is not None:
            excess[index] = decision.excess
        active[index] = decision.alarm
    learn_end = float(data.days[min(settings.baseline_windows, len(data.days)) - 1])
    return MachineResult(data.machine_id, method, data.fault, data.onset_day, data.failure_day,
                         learn_end, data.days, excess, active)


def summarise(results: list[MachineResult]) -> dict[str, Any]:
    """Fleet figures of one scorer."""
    faulty = [r for r in results if r.onset_day is not None]
    delays = [r.delay_days for r in faulty if r.delay_days is not None]
    shares = [r.delay_share for r in faulty if r.delay_share is not None]
    false_alarms = sum(r.false_alarms for r in results)
    healthy_days = sum(r.healthy_days for r in results)
    return {
        "machines": len(results),
        "faulty": len(faulty),
        "detected": len(delays),
        "missed": [r.machine for r in faulty if r.delay_days is None],
        "false_alarms": false_alarms,
        "false_alarm_machines": sorted({r.machine for r in results if r.false_alarms}),
        "healthy_machine_days": round(healthy_days, 2),
        "false_alarms_per_machine_day": false_alarms / healthy_days if healthy_days else None,
        "median_delay_days": float(np.median(delays)) if delays else None,
        "max_delay_days": float(np.max(delays)) if delays else None,
        "median_delay_share": float(np.median(shares)) if shares else None,
        "max_delay_share": float(np.max(shares)) if shares else None,
    }


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table of the model card."""
    def number(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
        return "-" if value is None else f"{scale * value:.{digits}f}"

    lines = ["| scorer | faults detected | missed | false alarms (per machine-day) | median delay (days) "
             "| max delay (days) | median delay / (onset to failure) | max delay share |",
             "|---|---|---|---|---|---|---|---|"]
    for method, s in summaries.items():
        cells = [method, f"{s['detected']}/{s['faulty']}", str(len(s["missed"])),
                 "-" if s["false_alarms"] is None else
                 f"{s['false_alarms']} ({number(s['false_alarms_per_machine_day'], 4)})",
                 number(s["median_delay_days"]), number(s["max_delay_days"]),
                 f"{number(s['median_delay_share'], 1, 100)} %", f"{number(s['max_delay_share'], 1, 100)} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_grid(results: list[MachineResult], path: Path, title: str) -> Path:
    """One panel per machine: smoothed score relative to the threshold, onset and alarms marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = -(-len(results) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.3 * rows), squeeze=False)
    for axis, result in zip(axes.flat, results, strict=False):
        axis.plot(result.days, result.excess, lw=0.7, color="tab:blue")
        axis.axhline(1.0, color="grey", lw=0.7, ls=":")
        axis.set_yscale("symlog", linthresh=1.0)
        axis.axvspan(result.days[0], result.learn_end_day, color="grey", alpha=0.15, lw=0)
        low, high = axis.get_ylim()
        axis.fill_between(result.days, low, high, where=result.active, color="tab:orange", alpha=0.3, lw=0,
                          step="post")
        axis.set_ylim(low, high)
        if result.onset_day is not None:
            axis.axvline(result.onset_day, color="tab:red", ls="--", lw=1.0)
        delay = result.delay_days
        label = (f"{result.machine}: healthy" if result.fault is None else
                 f"{result.machine}: {result.fault}, " + ("MISSED" if delay is None else f"delay {delay:.2f} d"))
        if result.false_alarms:
            label += f", {result.false_alarms} false"
        axis.set_title(label, fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(results):]:
        axis.set_visible(False)
    figure.suptitle(f"{title}: smoothed score / threshold distance (1 = threshold, symlog), day on x; "
                    "grey = baseline learning, red = fault onset, orange = alarm on", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=72)
    plt.close(figure)
    return path


def scorer_factories(methods: list[str], manifest: Path) -> tuple[dict[str, Callable[[], Scorer]], Model | None]:
    """A fresh-scorer factory per method; the ONNX model is loaded once and shared by the LSTM scorers."""
    model = load_model(manifest) if "lstm_ae" in methods else None
    return {method: functools.partial(make_scorer, method, model) for method in methods}, model


def monitor_settings(base: dict[str, float], overrides: list[str]) -> MonitorSettings:
    """MonitorSettings from ``base`` (e.g. a manifest's thresholds), then FIELD=VALUE overrides."""
    fields = MonitorSettings.model_fields
    values: dict[str, float] = dict(base)
    for item in overrides:
        key, _, value = item.partition("=")
        values[key] = float(value)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SystemExit(f"not MonitorSettings fields: {', '.join(unknown)}")
    return MonitorSettings.model_validate(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", choices=sorted(FLEETS), default="test")
    parser.add_argument("--methods", nargs="+", default=list(SCORERS), choices=list(SCORERS))
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=Path("models/vibration/evaluation"))
    parser.add_argument("--cache-dir", type=Path, default=Path("build/vibration-cache"))
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override a MonitorSettings field (for tuning on the validation fleet)")
    parser.add_argument("--agent-defaults", action="store_true",
                        help="start from MonitorSettings() instead of the manifest's thresholds")
    parser.add_argument("--no-plots", action="store_true", help="write the JSON and the table only")
    args = parser.parse_args(argv)
    base = {} if args.agent_defaults else load_manifest(args.manifest).thresholds
    fleet, settings = FLEETS[args.fleet], monitor_settings(base, args.set)
    factories, model = scorer_factories(args.methods, args.manifest)
    results: dict[str, list[MachineResult]] = {method: [] for method in args.methods}
    started = time.monotonic()
    for data in fleet_data(fleet, args.cache_dir):
        for method, factory in factories.items():
            results[method].append(run_monitor(data, fleet.feature_names, method, factory, settings))
        print(f"{data.machine_id} ({data.fault or 'healthy'}): "
              + ", ".join(f"{m} {r[-1].delay_days if r[-1].fault else '-'} / {r[-1].false_alarms} fa"
                          for m, r in results.items()) + f"  [{time.monotonic() - started:.0f} s]", flush=True)
    summaries = {method: summarise(items) for method, items in results.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    for method, items in ([] if args.no_plots else results.items()):
        plot_grid(items, args.out / f"{args.fleet}_{method}.png", f"{method} on the {args.fleet} fleet")
    report = {
        "fleet": {"name": args.fleet, **asdict(fleet)},
        "monitor": settings.model_dump(),
        "model": None if model is None else {"name": model.manifest.name, "version": model.manifest.version},
        "summary": summaries,
        "machines": {method: {r.machine: r.summary() for r in items} for method, items in results.items()},
    }
    (args.out / f"{args.fleet}.json").write_text(json.dumps(report, indent=1))
    print(markdown_table(summaries))
    print(f"{time.monotonic() - started:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

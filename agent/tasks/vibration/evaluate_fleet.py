"""The vibration task on our generator's test fleet and on an independent one, every scorer, vs an envelope yardstick.

    python -m agent.tasks.vibration.evaluate_fleet [--own-machines 20] [--alt-machines 12] [--days 20]

Each machine is one sensor of a real :class:`~agent.tasks.vibration.task.VibrationTask` in snapshot mode
(one task per scorer and configuration, in process, learning each machine from its first windows as in
the field).  The fleets: ``own`` is ``models.vibration.evaluate``'s held-out test fleet (our generator,
``sensors/simulate/vibration.py``, 1 s snapshots every 20 min; its windows are given to the task
directly), ``alt`` the independent generator ``sensors/simulate/vibration_alt.py`` (2 channels, sent as
wire messages through the agent's snapshot :class:`~agent.windowing.Windower`).  Configurations:
``geometry`` (each machine's bearing and nominal shaft speed under ``machines:``), ``estimated``
(bearing only, shaft speed estimated per window) and ``none`` (no geometry: ``likely_fault: unknown``,
an ``envelope_peak`` instead).  The four scorers share one feature extraction per window and settings
(the task's own ``window_features``, memoised: results are the same).  Reported per scorer: delay from
fault onset to the first window with the alarm on, as a share of onset-to-failure (median, worst;
missed counts as worst), false alarms (``anomaly_raised`` before onset) per machine-day of monitoring on
healthy machines and before onset on faulty ones, the fault type of the first anomaly event after onset
against the truth, and, without geometry, whether ``envelope_peak``'s order is the true fault's.  The
yardstick: ``models.vibration.envelope_baseline`` (kurtogram band, envelope lines at the known fault
frequencies vs a learnt baseline).  Writes ``models/vibration/reports/fleet.json``; then
``python -m models.vibration.fleet_report`` draws ``fleet.md`` and ``fleet_{own,alt}.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from unittest import mock

import numpy as np
import structlog

import agent.tasks.vibration.task as task_module
from agent.tasks.base import RejectedInput, TaskContext
from agent.tasks.vibration.config import VibrationConfig
from agent.tasks.vibration.task import VibrationTask
from agent.windowing import Window, Windower
from models.runtime import load_model
from models.vibration.envelope_baseline import EnvelopeBaseline, fault_lines
from models.vibration.runtime.features import flat_fraction, remove_spikes
from sensors.bearing import BearingGeometry
from sensors.simulate.vibration import Acquisition, FaultSpec, MachineSpec, RunSpec, VibrationSimulator
from sensors.simulate.vibration_alt import AGENT_FAULT, DAY_S, AltFleet, AltSimulator, alt_fleet
from sensors.wire import Kind

SCORERS = ("mahalanobis", "pca", "gmm", "lstm_ae")
CONDITIONS = ("geometry", "estimated", "none")
ENVELOPE = "envelope"
MANIFEST = Path("models/vibration/manifest.yaml")
REPORTS = Path("models/vibration/reports")
START_NS = 1_700_000_000_000_000_000
ORDER_TOLERANCE = 0.03
FAULT_ORDER = {"outer_race": "bpfo", "inner_race": "bpfi", "rolling_element": "bsf"}


@dataclass
class Truth:
    """A machine's ground truth and what the agent may be told about it."""

    machine: str
    fault: str | None  # the agent's name for it (None: healthy, or not a bearing fault)
    kind: str | None  # the generator's name
    onset_day: float | None
    failure_day: float | None
    end_day: float
    geometry: BearingGeometry
    shaft_hz: float


@dataclass
class Trace:
    """One method on one machine: per window day, excess (0 normal, 1 threshold), alarm; and its events."""

    days: list[float] = field(default_factory=list)
    excess: list[float] = field(default_factory=list)
    alarm: list[bool] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    ready_day: float | None = None


def own_specs(count: int) -> list[tuple[MachineSpec, RunSpec, int]]:
    """``models.vibration.evaluate``'s test fleet (its first ``count`` machines), from a models/ process (the agent's
    layer may not import models.vibration.data): JSON back to the simulator's dataclasses."""
    text = subprocess.run([sys.executable, "-m", "models.vibration.own_fleet_spec", str(count)], check=True,
                          capture_output=True, text=True).stdout
    return [(_dataclass(MachineSpec, item["machine"]), _dataclass(RunSpec, item["run"]), item["seed"])
            for item in json.loads(text)]


def _dataclass(kind: Any, values: dict[str, Any]) -> Any:
    """A (nested) simulator dataclass from its asdict() JSON: lists back to tuples, nested specs rebuilt."""
    nested = {"geometry": BearingGeometry, "fault": FaultSpec, "acquisition": Acquisition}
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name in nested and isinstance(value, dict):
            value = _dataclass(nested[name], value)
        fields[name] = tuple(value) if isinstance(value, list) else value
    return kind(**fields)


def own_machines(count: int) -> Iterator[tuple[Truth, Iterator[Window]]]:
    """Our generator's test fleet, snapshots as windows (a snapshot is exactly one window)."""
    for machine, run, seed in own_specs(count):
        fault = run.fault
        truth = Truth(machine.machine_id, None if fault is None else fault.kind,
                      None if fault is None else fault.kind, None if fault is None else fault.onset_s / DAY_S,
                      None if fault is None else fault.failure_s / DAY_S, run.duration_s / DAY_S,
                      machine.geometry, machine.shaft_hz)
        simulator = VibrationSimulator(machine, run, seed=seed)
        windows = (Window(truth.machine, Kind.VIBRATION, samples, run.sample_rate, START_NS + round(life * 1e9),
                          index) for index, (life, samples) in enumerate(simulator.snapshots()))
        yield truth, windows


def alt_machines(fleet: AltFleet) -> Iterator[tuple[Truth, Iterator[Window]]]:
    """The independent fleet, its messages cut by the agent's windower in snapshot mode."""
    for index, machine in enumerate(alt_fleet(fleet)):
        bearing, fault = machine.bearing, machine.fault
        truth = Truth(machine.machine_id, None if fault is None else AGENT_FAULT[fault.kind],
                      None if fault is None else fault.kind, None if fault is None else fault.onset_s / DAY_S,
                      None if fault is None else fault.failure_s / DAY_S, machine.days,
                      BearingGeometry(bearing.balls, bearing.ball_diameter, bearing.pitch_diameter,
                                      bearing.contact_deg), machine.shaft_hz)
        yield truth, _windowed(AltSimulator(machine, fleet, seed=fleet.seed * 1000 + index))


def _windowed(simulator: AltSimulator) -> Iterator[Window]:
    windower = Windower(1.0, 1.0, snapshot=True)
    for message in simulator.messages(start_ns=START_NS):
        windows, _ = windower.feed(message)
        windower.acknowledge()
        yield from windows


def machines_config(truth: Truth, condition: str) -> dict[str, Any]:
    """The ``machines:`` entry the task is given for a machine under a configuration."""
    if condition == "none":
        return {}
    g = truth.geometry
    bearing = {"n_elements": g.n_elements, "element_diameter": g.element_diameter,
               "pitch_diameter": g.pitch_diameter, "contact_angle_deg": g.contact_angle_deg}
    return {truth.machine: {"bearing": bearing, **({"shaft_hz": truth.shaft_hz} if condition == "geometry" else {})}}


@contextlib.contextmanager
def shared_features() -> Iterator[None]:
    """The tasks of one window share its features: the task's own ``window_features``, computed once per
    (window, settings).  The cache holds the window, so its id cannot be reused while cached."""
    original = task_module.window_features
    cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def cached(samples: np.ndarray, sample_rate: float, settings: Any, max_flat: float) -> Any:
        key = (id(samples), sample_rate, settings, max_flat)
        if key not in cache:
            if len(cache) > 16:
                cache.clear()
            cache[key] = (samples, original(samples, sample_rate, settings, max_flat))
        return cache[key][1]

    with mock.patch.object(task_module, "window_features", cached):
        yield


class MachineRun:
    """All methods on one machine: a task per (scorer, configuration), and the envelope yardstick."""

    def __init__(self, truth: Truth, scorers: list[str], conditions: list[str], state: Path) -> None:
        self.truth = truth
        log = structlog.get_logger("evaluate_fleet")
        self.tasks: dict[str, VibrationTask] = {}
        for condition in conditions:
            for scorer in scorers:
                config = VibrationConfig(scorer=scorer, mode="snapshot", machines=machines_config(truth, condition),
                                         model=MANIFEST if scorer == "lstm_ae" else None,
                                         health_interval_s=86_400, save_interval_s=86_400)
                directory = state / truth.machine / f"{scorer}-{condition}"
                directory.mkdir(parents=True)
                self.tasks[f"{scorer}/{condition}"] = VibrationTask(config, TaskContext("eval", directory,
                                                                                        load_model, log))
        self.traces: dict[str, Trace] = {key: Trace() for key in [*self.tasks, ENVELOPE]}
        self.envelope = EnvelopeBaseline(fault_lines(truth.geometry, truth.shaft_hz))

    def feed(self, window: Window) -> None:
        day = (window.start_ns - START_NS) / 1e9 / DAY_S
        for key, task in self.tasks.items():
            try:
                drafts = task.process(window)
            except RejectedInput:
                continue
            trace, decision = self.traces[key], task.machines[window.sensor_id].last
            assert decision is not None
            if decision.transition == "baseline_ready":
                trace.ready_day = day
            trace.days.append(day)
            trace.excess.append(decision.excess if decision.phase == "monitoring" else float("nan"))
            trace.alarm.append(decision.alarm)
            trace.events += [_event(day, draft.type, draft.body) for draft in drafts
                             if draft.type in ("anomaly_raised", "anomaly_updated")]
        self._feed_envelope(window, day)

    def _feed_envelope(self, window: Window, day: float) -> None:
        if float(flat_fraction(window.samples)) > 0.05:
            return
        trace = self.traces[ENVELOPE]
        was_on = bool(trace.alarm[-1]) if trace.alarm else False
        excess, alarm, fault = self.envelope.update(remove_spikes(window.samples)[0][:, 0], window.sample_rate)
        if excess is None:
            return
        if trace.ready_day is None:
            trace.ready_day = day
        trace.days.append(day)
        trace.excess.append(excess)
        trace.alarm.append(alarm)
        if alarm:
            trace.events.append({"day": day, "type": "anomaly_updated" if was_on else "anomaly_raised",
                                 "likely_fault": fault, "order": None})

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()


def _event(day: float, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    peak = body.get("envelope_peak")
    return {"day": day, "type": kind, "likely_fault": body.get("likely_fault"),
            "order": None if not peak else peak["order"]}


def machine_result(truth: Truth, trace: Trace) -> dict[str, Any]:
    """One method on one machine against the truth."""
    days, alarm = np.array(trace.days), np.array(trace.alarm, dtype=bool)
    healthy_end = truth.onset_day if truth.onset_day is not None else truth.end_day
    raised = [e for e in trace.events if e["type"] == "anomaly_raised"]
    false = [e["day"] for e in raised if e["day"] < healthy_end]
    delay = share = named_share = None
    first = named = None
    if truth.onset_day is not None:
        on = alarm & (days >= truth.onset_day) if len(days) else alarm
        if on.any():
            delay = float(days[np.argmax(on)] - truth.onset_day)
            end = truth.failure_day if truth.failure_day is not None else truth.end_day
            share = delay / max(end - truth.onset_day, 1e-9)
        first = next((e for e in trace.events if e["day"] >= truth.onset_day), None)
        named = next((e for e in trace.events if e["day"] >= truth.onset_day
                      and e["likely_fault"] not in (None, "unknown")), None)
        if named is not None:
            end = truth.failure_day if truth.failure_day is not None else truth.end_day
            named_share = (named["day"] - truth.onset_day) / max(end - truth.onset_day, 1e-9)
    return {"fault": truth.kind, "agent_fault": truth.fault, "onset_day": truth.onset_day,
            "failure_day": truth.failure_day, "delay_days": delay, "delay_share": share,
            "false_alarms": len(false), "false_alarm_days": [round(d, 3) for d in false],
            "monitored_healthy_days": max(healthy_end - (trace.ready_day or healthy_end), 0.0),
            "fault_at_raise": None if first is None else first["likely_fault"],
            "order_at_raise": None if first is None else first["order"],
            "first_named": None if named is None else named["likely_fault"], "first_named_share": named_share,
            "true_order": _true_order(truth)}


def _true_order(truth: Truth) -> float | None:
    if truth.fault not in FAULT_ORDER:
        return None
    orders = truth.geometry.orders()
    return orders[FAULT_ORDER[truth.fault]] * (2 if truth.fault == "rolling_element" else 1)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Fleet figures of one method under one configuration."""
    rows = list(results.values())
    bearing = [r for r in rows if r["agent_fault"] is not None]
    faulty = [r for r in rows if r["onset_day"] is not None]
    shares = [r["delay_share"] if r["delay_share"] is not None else 1.0 for r in faulty]
    healthy = [r for r in rows if r["onset_day"] is None]

    def rate(items: list[dict[str, Any]]) -> float | None:
        days = sum(r["monitored_healthy_days"] for r in items)
        return sum(r["false_alarms"] for r in items) / days if days else None

    def order_right(r: dict[str, Any]) -> bool:
        order, true = r["order_at_raise"], r["true_order"]
        return order is not None and true is not None and abs(order - true) <= ORDER_TOLERANCE * true

    return {
        "machines": len(rows), "faulty": len(faulty), "bearing_faults": len(bearing),
        "detected": sum(r["delay_days"] is not None for r in faulty),
        "median_delay_share": float(np.median(shares)) if shares else None,
        "worst_delay_share": float(np.max(shares)) if shares else None,
        "false_alarms": sum(r["false_alarms"] for r in rows),
        "false_alarms_per_machine_day": rate(rows),
        "false_alarms_per_machine_day_healthy": rate(healthy),
        "false_alarms_per_machine_day_before_onset": rate(faulty),
        "fault_right": sum(r["fault_at_raise"] == r["agent_fault"] for r in bearing),
        "fault_named_wrong": sum(r["fault_at_raise"] not in (None, "unknown", r["agent_fault"]) for r in faulty),
        "fault_right_first_named": sum(r["first_named"] == r["agent_fault"] for r in bearing),
        "fault_wrong_first_named": sum(r["first_named"] not in (None, r["agent_fault"]) for r in faulty),
        "median_first_named_share": _median([r["first_named_share"] for r in bearing
                                             if r["first_named"] == r["agent_fault"]]),
        "non_bearing_named_as_race": sum(r["fault_at_raise"] not in (None, "unknown")
                                         for r in faulty if r["agent_fault"] is None),
        "envelope_order_right": sum(order_right(r) for r in bearing),
    }


def evaluate(fleet: str, machines: Iterator[tuple[Truth, Iterator[Window]]], scorers: list[str],
             conditions: list[str], traces: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every method on every machine of one fleet; per-window traces go into ``traces`` (for the pictures)."""
    per: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with TemporaryDirectory() as state, shared_features():
        for truth, windows in machines:
            run = MachineRun(truth, scorers, conditions, Path(state))
            for window in windows:
                run.feed(window)
            run.close()
            for key, trace in run.traces.items():
                per.setdefault(key, {})[truth.machine] = machine_result(truth, trace)
                if "/" not in key or key.endswith("/" + conditions[0]):
                    name = f"{fleet}/{truth.machine}/{key.split('/')[0]}"
                    traces[f"{name}/days"] = np.array(trace.days, dtype=np.float32)
                    traces[f"{name}/excess"] = np.array(trace.excess, dtype=np.float32)
                    traces[f"{name}/alarm"] = np.array(trace.alarm, dtype=bool)
            print(f"{fleet} {truth.machine} ({truth.kind or 'healthy'}): " + ", ".join(
                f"{key} {per[key][truth.machine]['delay_share'] if truth.kind else '-'}"
                f"/{per[key][truth.machine]['false_alarms']}fa" for key in run.traces)
                + f" [{time.monotonic() - started:.0f} s]", flush=True)
    return {"summary": {key: summarise(items) for key, items in per.items()}, "machines": per}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--own-machines", type=int, default=20, help="machines of our test fleet (0: none)")
    parser.add_argument("--alt-machines", type=int, default=12, help="machines of the independent fleet (0: none)")
    parser.add_argument("--alt-faulty", type=int, default=7)
    parser.add_argument("--days", type=float, default=20.0, help="the independent fleet's run length")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--onset-share", type=float, nargs=2, default=AltFleet().onset_share,
                        help="the independent fleet's fault onsets, as shares of each machine's life")
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=SCORERS)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--output", type=Path, default=REPORTS)
    parser.add_argument("--traces", type=Path, default=Path("build/vibration-fleet/fleet_traces.npz"),
                        help="per-window traces for the pictures (not kept in the repository)")
    parser.add_argument("--no-report", action="store_true", help="write fleet.json only (no fleet.md, no PNGs)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    alt = replace(AltFleet(), machines=args.alt_machines, faulty=min(args.alt_faulty, args.alt_machines),
                  days=args.days, seed=args.seed, onset_share=tuple(args.onset_share))
    traces: dict[str, np.ndarray] = {}
    sources: dict[str, Callable[[], Iterator[tuple[Truth, Iterator[Window]]]]] = {
        "own": lambda: own_machines(args.own_machines), "alt": lambda: alt_machines(alt)}
    counts = {"own": args.own_machines, "alt": args.alt_machines}
    report: dict[str, Any] = {"fleets": {}, "settings": {
        "own": {"fleet": "models.vibration.evaluate FLEETS['test']", "machines": args.own_machines},
        "alt": {"fleet": "sensors.simulate.vibration_alt", "machines": alt.machines, "faulty": alt.faulty,
                "days": alt.days, "seed": alt.seed}, "scorers": args.scorers, "conditions": args.conditions,
        "manifest": str(MANIFEST)}}
    for fleet, source in sources.items():
        if counts[fleet]:
            report["fleets"][fleet] = evaluate(fleet, source(), args.scorers, args.conditions, traces)
    report["seconds"] = round(time.monotonic() - started, 1)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "fleet.json"
    path.write_text(json.dumps(report, indent=1))
    args.traces.parent.mkdir(parents=True, exist_ok=True)
    traces_path = args.traces
    np.savez_compressed(traces_path, **traces)  # type: ignore[arg-type]
    if not args.no_report:  # the pictures need matplotlib, which the agent's layer never imports
        subprocess.run([sys.executable, "-m", "models.vibration.fleet_report", str(path), str(traces_path)],
                       check=True)
        print((args.output / "fleet.md").read_text())
    print(f"{report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

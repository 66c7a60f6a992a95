"""Tables and per-machine pictures of the fleet evaluation (agent.tasks.vibration.evaluate_fleet's fleet.json).

    python -m models.vibration.fleet_report models/vibration/reports/fleet.json build/vibration-fleet/fleet_traces.npz

Writes ``fleet.md`` beside the JSON and, from the traces, ``fleet_own.png`` and ``fleet_alt.png``: one panel
per machine, each method's score over time (0 = normal, 1 = its threshold), fault onset, failure and
each method's first alarm after onset marked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FLEET_NAMES = {"own": "own test fleet (our generator)", "alt": "independent fleet (vibration_alt)"}
CONDITION_NAMES = {"geometry": "bearing + nominal shaft speed configured",
                   "estimated": "bearing configured, shaft speed estimated",
                   "none": "no geometry configured"}
COLOURS = {"mahalanobis": "tab:blue", "pca": "tab:green", "gmm": "tab:purple", "lstm_ae": "tab:orange",
           "envelope": "tab:grey"}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(report: dict[str, Any], condition: str) -> list[str]:
    """Per method: own fleet vs independent fleet, under one configuration (the envelope row is told geometry)."""
    fleets = list(report["fleets"])
    header = "| method | " + " | ".join(
        f"{name}: median / worst delay | false alarms per machine-day (healthy; before onset) | fault right at raise"
        for name in fleets) + " |"
    lines = [header, "|---|" + "---|---|---|" * len(fleets)]
    methods = [*report["settings"]["scorers"], *(["envelope"] if condition == "geometry" else [])]
    for method in methods:
        key = method if method == "envelope" else f"{method}/{condition}"
        cells = [method if method != "envelope" else "envelope baseline (told the fault frequencies)"]
        for fleet in fleets:
            s = report["fleets"][fleet]["summary"][key]
            missed = s["faulty"] - s["detected"]
            cells.append(f"{_percent(s['median_delay_share'])} / {_percent(s['worst_delay_share'])}"
                         + (f" ({missed} missed)" if missed else ""))
            cells.append(f"{_rate(s['false_alarms_per_machine_day'])} ({s['false_alarms']}: "
                         f"{_rate(s['false_alarms_per_machine_day_healthy'])}; "
                         f"{_rate(s['false_alarms_per_machine_day_before_onset'])})")
            right = f"{s['fault_right']} of {s['bearing_faults']}"
            if condition == "none":
                right += (f" (envelope_peak order right: {s['envelope_order_right']}; "
                          f"race named: {s['fault_named_wrong']})")
            else:
                right += (f"; first named: {s['fault_right_first_named']} right"
                          f" (median {_percent(s['median_first_named_share'])}), {s['fault_wrong_first_named']} wrong")
            cells.append(right)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    parts = ["# Vibration task on two generators", "",
             f"Fleets: {', '.join(FLEET_NAMES[f] for f in report['fleets'])}; settings {json.dumps(settings)}; "
             f"{report['seconds']:.0f} s.", "",
             "Delay: fault onset to the first window with the alarm on, as a share of onset-to-failure (a missed "
             "fault counts as 100 %). False alarms: `anomaly_raised` before onset, per machine-day of monitoring "
             "(after the baseline). Fault right: the `likely_fault` of the first anomaly event after onset equals "
             "the true fault, over the bearing faults (an unbalance has no race to name); first named: the first "
             "anomaly event after onset that names a type (`anomaly_updated` comes at most every 12 windows), "
             "right or wrong (over all faults), and when the right one came, as a share of onset-to-failure.", ""]
    for condition in settings["conditions"]:
        parts += [f"## {CONDITION_NAMES[condition]}", "", *table(report, condition), ""]
    return "\n".join(parts)


def plot_fleet(report: dict[str, Any], traces: Any, fleet: str, path: Path) -> Path:
    """One panel per machine: every method's excess over time, onset, failure and first alarms marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machines = report["fleets"][fleet]["machines"]
    methods = [m for m in [*report["settings"]["scorers"], "envelope"]
               if any(key.startswith(f"{fleet}/") and key.endswith(f"/{m}/days") for key in traces)]
    names = list(machines["envelope"])
    columns = 4
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 1.9 * rows), squeeze=False)
    condition = report["settings"]["conditions"][0]
    for axis, name in zip(axes.flat, names, strict=False):
        _panel(axis, traces, fleet, name, methods, machines, condition)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    handles = [plt.Line2D([], [], color=COLOURS[m], lw=1) for m in methods]
    figure.legend(handles, methods, loc="lower center", fontsize=7, ncol=len(methods))
    figure.suptitle(f"{FLEET_NAMES[fleet]}, {CONDITION_NAMES[condition]}: score (0 normal, 1 threshold, symlog) "
                    "over days; red dashed onset, black failure, triangles first alarm after onset", fontsize=8)
    figure.tight_layout(rect=(0, 0.04, 1, 0.95))
    figure.savefig(path, dpi=60)
    plt.close(figure)
    return path


def _panel(axis: Any, traces: Any, fleet: str, name: str, methods: list[str], machines: dict[str, Any],
           condition: str) -> None:
    truth = machines["envelope"][name]
    for method in methods:
        prefix = f"{fleet}/{name}/{method}"
        days, excess = traces[f"{prefix}/days"], traces[f"{prefix}/excess"]
        step = max(len(days) // 600, 1)  # a few hundred points per line keep the PNG small
        axis.plot(days[::step], np.clip(excess[::step], -1, 50), lw=0.6, color=COLOURS[method])
        result = machines[method if method == "envelope" else f"{method}/{condition}"][name]
        if result["delay_days"] is not None and result["onset_day"] is not None:
            axis.plot(result["onset_day"] + result["delay_days"], 40, marker="v", ms=4, color=COLOURS[method])
    axis.axhline(1.0, color="black", lw=0.5, ls=":")
    axis.set_yscale("symlog", linthresh=1.0)
    if truth["onset_day"] is not None:
        axis.axvline(truth["onset_day"], color="tab:red", ls="--", lw=0.9)
    if truth["failure_day"] is not None:
        axis.axvline(truth["failure_day"], color="black", lw=0.9)
    axis.set_title(f"{name}: {truth['fault'] or 'healthy'}", fontsize=7)
    axis.tick_params(labelsize=6)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path, traces_path = Path(args[0]), Path(args[1])
    report = json.loads(path.read_text())
    (path.parent / "fleet.md").write_text(markdown(report))
    with np.load(traces_path) as traces:
        data = {key: traces[key] for key in traces.files}
    for fleet in report["fleets"]:
        plot_fleet(report, data, fleet, path.parent / f"fleet_{fleet}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Offline: which vibration features are relevant to bearing faults, by tsfresh's relevance tests.

``python -m models.vibration.select_features`` simulates a small fleet run to failure, cuts
windows from each machine's healthy stretch and from its faulty stretch, extracts tsfresh
features (a vibration-minded set) beside this package's numpy features, z-scores every feature
per machine against that machine's early healthy windows (as the agent's monitor does), and runs
tsfresh's relevance tests (Mann-Whitney per feature, Benjamini-Hochberg at the given FDR).  It
writes a small report (Markdown and JSON) of what was selected.

Also here: :func:`tsfresh_equivalents`, the tsfresh calculations that give the same numbers as
:mod:`models.vibration.runtime.features` (used by the equality test and the speed benchmark).
Training-side only: imports tsfresh and pandas, never imported by the agent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.vibration.runtime.features import FEATURE_NAMES, N_BANDS, FeatureSettings, band_edges, prepare_windows
from sensors.simulate.vibration import FAULT_KINDS, VibrationSimulator, make_fleet, run_to_failure

#: numpy features that tsfresh computes too (directly or from its fft coefficients)
SHARED_FEATURES = ("rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness", "mean_abs_change",
                   *(f"band{i}" for i in range(N_BANDS)))
#: tsfresh calculators beyond the shared ones, chosen for vibration (cost per 20 kHz window in mind)
EXTRA_TSFRESH: dict[str, Any] = {
    "standard_deviation": None, "abs_energy": None, "cid_ce": [{"normalize": False}],
    "number_peaks": [{"n": 5}], "ratio_beyond_r_sigma": [{"r": 3}, {"r": 5}],
    "quantile": [{"q": 0.01}, {"q": 0.99}], "fft_aggregated": [{"aggtype": a} for a in
                                                                ("centroid", "variance", "skew", "kurtosis")],
    "spkt_welch_density": [{"coeff": c} for c in (2, 5, 8)], "c3": [{"lag": 1}],
    "energy_ratio_by_chunks": [{"num_segments": 10, "segment_focus": i} for i in (0, 5)],
}


def _tsfresh_frame(windows: np.ndarray) -> Any:
    """(windows, samples) float as tsfresh's long format: id, time, x (float64)."""
    import pandas as pd

    count, length = windows.shape
    return pd.DataFrame({"id": np.repeat(np.arange(count), length), "time": np.tile(np.arange(length), count),
                         "x": np.asarray(windows, dtype=np.float64).ravel()})


def _extract(windows: np.ndarray, parameters: dict[str, Any]) -> Any:
    from tsfresh import extract_features

    return extract_features(_tsfresh_frame(windows), column_id="id", column_sort="time",
                            default_fc_parameters=parameters, n_jobs=0, disable_progressbar=True)


def shared_parameters(length: int) -> dict[str, Any]:
    """tsfresh calculators for the shared features of windows of ``length`` samples."""
    return {"root_mean_square": None, "absolute_maximum": None, "maximum": None, "minimum": None,
            "kurtosis": None, "skewness": None, "mean_abs_change": None,
            "fft_coefficient": [{"coeff": k, "attr": "abs"} for k in range(length // 2 + 1)]}


def tsfresh_equivalents(windows: np.ndarray, sample_rate: float) -> dict[str, np.ndarray]:
    """The shared features of (windows, samples) single-channel windows, computed by tsfresh.

    Derived ones follow their definitions: peak-to-peak = maximum - minimum, crest = absolute
    maximum / RMS, band power = Parseval-weighted sum of |FFT coefficient|^2 over the band.
    """
    length = windows.shape[1]
    table = _extract(windows, shared_parameters(length))
    column = {name: table[f"x__{name}"].to_numpy() for name in
              ("root_mean_square", "absolute_maximum", "maximum", "minimum", "kurtosis", "skewness",
               "mean_abs_change")}
    coefficients = np.stack([table[f'x__fft_coefficient__attr_"abs"__coeff_{k}'].to_numpy()
                             for k in range(length // 2 + 1)], axis=1)
    weights = np.full(coefficients.shape[1], 2.0)
    weights[0] = 1.0
    if length % 2 == 0:
        weights[-1] = 1.0
    power = coefficients**2 * weights / length**2
    band = np.searchsorted(band_edges(sample_rate)[1:-1], np.arange(coefficients.shape[1]) * sample_rate / length,
                           side="right")
    values = {
        "rms": column["root_mean_square"], "peak": column["absolute_maximum"],
        "peak_to_peak": column["maximum"] - column["minimum"],
        "crest_factor": column["absolute_maximum"] / column["root_mean_square"],
        "kurtosis": column["kurtosis"], "skewness": column["skewness"], "mean_abs_change": column["mean_abs_change"],
    }
    values.update({f"band{b}": power[:, band == b].sum(axis=1) for b in range(N_BANDS)})
    return values


def fleet_windows(machines: int, windows_per_phase: int, window_s: float, sample_rate: float, seed: int
                  ) -> list[tuple[np.ndarray, np.ndarray, FeatureSettings]]:
    """Per machine: (windows, labels 0 healthy / 1 faulty, feature settings), one fault kind in turn."""
    fleet = make_fleet(machines, seed=seed, sample_rate=sample_rate)
    out = []
    for index, machine in enumerate(fleet):
        phase_s = windows_per_phase * window_s
        run = run_to_failure(FAULT_KINDS[index % len(FAULT_KINDS)], phase_s, 2 * phase_s, sample_rate=sample_rate)
        simulator = VibrationSimulator(machine, run, seed=seed + index)
        blocks = [block for block in simulator.blocks(window_s)]
        data = np.stack([block.samples for block in blocks])
        labels = np.array([int(block.life_s >= phase_s) for block in blocks])
        out.append((data, labels, FeatureSettings(geometry=machine.geometry)))
    return out


def select(machines: int = 8, windows_per_phase: int = 30, window_s: float = 0.5, sample_rate: float = 20_000.0,
           seed: int = 0, fdr: float = 0.001) -> dict[str, Any]:
    """Run the selection; returns the report as a dict (features sorted by p-value)."""
    import pandas as pd
    from tsfresh.feature_selection.relevance import calculate_relevance_table

    started = time.perf_counter()
    tables, labels = [], []
    for data, label, settings in fleet_windows(machines, windows_per_phase, window_s, sample_rate, seed):
        features, _, usable = prepare_windows(data, sample_rate, settings)
        kept = data[usable][:, :, 0]
        table = _extract(kept, EXTRA_TSFRESH).add_prefix("tsfresh:")
        ours = pd.DataFrame(features, columns=[f"numpy:{name}" for name in FEATURE_NAMES], index=table.index)
        table = pd.concat([ours, table], axis=1)
        # As the monitor does: each feature in units of this machine's own early healthy spread.
        reference = table.iloc[: max(5, windows_per_phase // 2)]
        tables.append((table - reference.mean()) / reference.std().replace(0, 1.0))
        labels.append(label[usable])
    frame = pd.concat(tables, ignore_index=True).replace([np.inf, -np.inf], np.nan).fillna(0.0)
    target = pd.Series(np.concatenate(labels), index=frame.index)
    relevance = calculate_relevance_table(frame, target, fdr_level=fdr).sort_values("p_value")
    rows = [{"feature": name, "p_value": float(row["p_value"]), "relevant": bool(row["relevant"])}
            for name, row in relevance.iterrows()]
    return {"machines": machines, "windows": len(frame), "faulty_windows": int(target.sum()),
            "window_s": window_s, "sample_rate": sample_rate, "seed": seed, "fdr_level": fdr,
            "seconds": round(time.perf_counter() - started, 1),
            "selected": [row["feature"] for row in rows if row["relevant"]],
            "rejected": [row["feature"] for row in rows if not row["relevant"]], "table": rows}


def write_report(report: dict[str, Any], folder: Path) -> Path:
    """feature_selection.json (everything) and feature_selection.md (the summary) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_selection.json").write_text(json.dumps(report, indent=1))
    ours = [row for row in report["table"] if row["feature"].startswith("numpy:")]
    lines = [
        "# Vibration feature selection (tsfresh relevance tests)", "",
        f"Simulated fleet: {report['machines']} machines run to failure (outer race, inner race, rolling "
        f"element in turn), {report['windows']} windows of {report['window_s']} s at {report['sample_rate']:.0f} Hz, "
        f"{report['faulty_windows']} after fault onset. Features z-scored per machine against its early healthy "
        f"windows. Mann-Whitney U per feature, Benjamini-Hochberg FDR {report['fdr_level']}; seed {report['seed']}.",
        "", f"Selected {len(report['selected'])} of {len(report['table'])} features; rejected: "
        f"{', '.join(report['rejected']) or 'none'}.", "",
        "| numpy feature (the agent's) | p-value | selected |", "|---|---|---|",
        *(f"| {row['feature'].removeprefix('numpy:')} | {row['p_value']:.2e} | {'yes' if row['relevant'] else 'no'} |"
          for row in ours), "",
        "Reproduce: `python -m models.vibration.select_features` "
        f"(ran in {report['seconds']} s).", "",
    ]
    path = folder / "feature_selection.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.vibration.select_features", description=__doc__)
    parser.add_argument("--machines", type=int, default=8)
    parser.add_argument("--windows-per-phase", type=int, default=30)
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--sample-rate", type=float, default=20_000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fdr", type=float, default=0.001)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports")
    args = parser.parse_args(argv)
    report = select(args.machines, args.windows_per_phase, args.window_s, args.sample_rate, args.seed, args.fdr)
    path = write_report(report, args.out)
    print(f"selected {len(report['selected'])} of {len(report['table'])} features; report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The fleet evaluation on a tiny independent fleet: the report's shape, and a clearly faulty machine is found."""

from __future__ import annotations

import json
from pathlib import Path

from agent.tasks.vibration.evaluate_fleet import main


def test_tiny_fleet_report(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    assert main(["--own-machines", "0", "--alt-machines", "2", "--alt-faulty", "1", "--days", "5",
                 "--onset-share", "0.55", "0.6", "--scorers", "mahalanobis", "--conditions", "geometry", "none",
                 "--output", str(out), "--traces", str(tmp_path / "traces.npz")]) == 0
    report = json.loads((out / "fleet.json").read_text())
    assert list(report["fleets"]) == ["alt"]
    summary = report["fleets"]["alt"]["summary"]
    assert set(summary) == {"mahalanobis/geometry", "mahalanobis/none", "envelope"}
    for figures in summary.values():
        assert figures["machines"] == 2 and figures["faulty"] == 1 and figures["bearing_faults"] == 1
        assert {"median_delay_share", "worst_delay_share", "false_alarms_per_machine_day", "fault_right",
                "envelope_order_right"} <= set(figures)
    faulty = report["fleets"]["alt"]["machines"]["mahalanobis/geometry"]["alt-00"]
    assert faulty["fault"] == "outer_race" and faulty["delay_days"] is not None
    assert faulty["delay_share"] < 0.5
    assert report["fleets"]["alt"]["machines"]["mahalanobis/geometry"]["alt-01"]["fault"] is None
    assert "| mahalanobis |" in (out / "fleet.md").read_text()
    png = out / "fleet_alt.png"
    assert png.exists() and png.stat().st_size < 300_000


def test_own_fleet_specs_round_trip() -> None:
    from agent.tasks.vibration.evaluate_fleet import own_specs
    from models.vibration.data import fleet_runs
    from models.vibration.evaluate import FLEETS

    for (machine, run, seed), entry in zip(own_specs(3), fleet_runs(FLEETS["test"])[:3], strict=True):
        assert machine == entry.machine and run == entry.run and seed == entry.seed

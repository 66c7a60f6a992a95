"""The replay regression fixture: a seeded vibration recording and the config it is replayed with.

``python -m tests.replay_fixture --update`` regenerates tests/data/replay/expected-events.jsonl
from the current agent (review the diff before committing it: it is the regression baseline).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sensors.recording import RecordingWriter
from sensors.simulate.vibration import RunSpec, VibrationSimulator, demo_run, make_fleet
from sensors.wire import encode

DATA = Path(__file__).parent / "data" / "replay"
EXPECTED = DATA / "expected-events.jsonl"
START_NS = 1_780_000_000_000_000_000  # fixed, so that expected source times are stable


def write_recording(path: Path) -> Path:
    """Two machines for 60 s at 20 kHz: pump-00 healthy, pump-01 with an outer-race fault from 30 s."""
    healthy, faulty = make_fleet(2, seed=3, prefix="pump")
    runs = [(healthy, RunSpec(duration_s=60.0)),
            (faulty, demo_run("outer_race", demo_s=60.0, onset_demo_s=30.0))]
    with RecordingWriter(path) as writer:
        streams = [VibrationSimulator(machine, run, seed=11).messages(start_ns=START_NS, chunk_s=0.1)
                   for machine, run in runs]
        for chunks in zip(*streams, strict=True):
            for message in chunks:
                writer.write(encode(message), message.timestamp_ns)
        writer.write_metadata("ground_truth", {"pump-01": {"fault": "outer_race", "onset_s": 30.0}})
    return path


def config(state_dir: Path, events: Path) -> dict[str, Any]:
    return {"device": "replay-test", "state_dir": str(state_dir), "log": {"level": "warning", "format": "json"},
            "sources": [{"kind": "recording", "path": "replaced-by-the-command-line"}],
            "sinks": [{"kind": "jsonl", "path": str(events)}],
            "tasks": {"vibration": {"scorer": "mahalanobis", "sensors": ["pump-*"], "baseline_windows": 20}}}


def replay_through_agent(directory: Path) -> Path:
    """Record, then run ``edge-agent run --recording`` on it; returns the events file."""
    recording = write_recording(directory / "line.mcap")
    events = directory / "events.jsonl"
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config(directory / "state", events)))
    subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(path), "--recording",
                    str(recording)], check=True, cwd=Path(__file__).parents[1], timeout=300)
    return events


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the expected events")
    arguments = parser.parse_args()
    import tempfile

    produced = replay_through_agent(Path(tempfile.mkdtemp()))
    if arguments.update:
        DATA.mkdir(parents=True, exist_ok=True)
        EXPECTED.write_text(produced.read_text())
        print(f"wrote {EXPECTED}")
    else:
        print(produced.read_text())

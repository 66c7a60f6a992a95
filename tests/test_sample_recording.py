"""The shipped sample recording: small, found by name, and replayed through the demo's tasks into alerts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sensors.recording import RecordingReader
from sensors.sample import SAMPLE_RECORDING, recording_path
from tests.cli_runner import REPO, cli


def test_the_sample_is_small_and_found_by_name(tmp_path: Path) -> None:
    assert SAMPLE_RECORDING.stat().st_size < 5 * 2**20
    assert recording_path("sample") == SAMPLE_RECORDING
    assert recording_path(str(tmp_path / "line3.mcap")) == tmp_path / "line3.mcap"
    with RecordingReader(SAMPLE_RECORDING) as reader:
        kinds = {entry[1].split("/")[2] for entry in reader.messages()}
    assert {"vibration", "frame", "audio"} <= kinds


def test_run_on_the_sample_gives_the_demos_alerts(tmp_path: Path) -> None:
    """README: ``edge-agent run --config config/demo.yaml --recording sample`` (here with a state dir of its own)."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["state_dir"] = str(tmp_path / "state")
    config["tasks"]["quality"]["model"] = str(REPO / "models" / "quality")
    config["tasks"]["symbols"]["model"] = str(REPO / "models" / "symbols")
    config["tasks"]["speakers"]["model"] = str(REPO / "models" / "speakers")
    config["drain_timeout_s"] = 60
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    done = cli("run", "--config", path, "--recording", "sample")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    types = {(e["task"], e["type"], e["severity"]) for e in events}
    assert ("quality", "part_inspected", "alarm") in types
    assert ("symbols", "symbols_detected", "info") in types

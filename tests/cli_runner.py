"""Running the real ``edge-agent`` CLI in a subprocess, and checking an expected failure's one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.testing import free_port

REPO = Path(__file__).resolve().parents[1]


#: root writes anywhere; without these capabilities it obeys a folder's mode like any user
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search"]


def cli(*args: str | Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``edge-agent ARGS`` as a subprocess (the real entry point, the real exit code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*(prefix or []), sys.executable, "-m", "agent.cli", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def fails_with(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The one stderr line of a failed command, after checking its exit code, its words and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def config_dict(state_dir: Path, **changes: Any) -> dict[str, Any]:
    """A small valid agent config: a ZeroMQ source nobody feeds, a JSONL sink, the vibration task."""
    config: dict[str, Any] = {
        "device": "line3", "state_dir": str(state_dir),
        "sources": [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}"}],
        "sinks": [{"kind": "jsonl", "path": "events.jsonl"}],
        "tasks": {"vibration": {"scorer": "mahalanobis"}},
    }
    config.update(changes)
    return config

"""The shipped sample recording, found by name from the command line (a light module: no MCAP import)."""

from __future__ import annotations

from pathlib import Path

#: 8 s of the demo's simulated factory, made by ``edge-agent simulate --out FILE --duration 8`` (seed 7)
SAMPLE_RECORDING = Path(__file__).resolve().parent / "simulate" / "data" / "sample.mcap"


def recording_path(name: str) -> Path:
    """A recording named on the command line; ``sample`` (when no such file is here) is the shipped one."""
    path = Path(name)
    return SAMPLE_RECORDING if name == "sample" and not path.exists() else path

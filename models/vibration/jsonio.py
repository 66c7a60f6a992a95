"""Atomic JSON files: learnt machine state and simulator ground truth are never seen half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.runtime.files import write_bytes_atomic


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON atomically (see :func:`models.runtime.files.write_bytes_atomic`)."""
    return write_bytes_atomic(path, json.dumps(data, indent=1, allow_nan=False).encode())

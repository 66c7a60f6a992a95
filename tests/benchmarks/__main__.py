"""Run every benchmark module (``python -m tests.benchmarks [NAME ...]``, or ``make bench``)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def main(names: list[str]) -> int:
    package = Path(__file__).parent
    available = sorted(m.name for m in pkgutil.iter_modules([str(package)]) if m.name.startswith("bench_"))
    chosen = [f"bench_{name}" if not name.startswith("bench_") else name for name in names] or available
    results = {}
    for name in chosen:
        print(f"== {name}", flush=True)
        results[name] = importlib.import_module(f"tests.benchmarks.{name}").run()
    print(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Our held-out test fleet's machine and run specs as JSON, for the agent-side fleet evaluation (which must not
import models.vibration.data or .evaluate: the run-time layer never imports training or evaluation code).

    python -m models.vibration.own_fleet_spec [MACHINES]    # JSON on stdout
"""

from __future__ import annotations

import dataclasses
import json
import sys

from models.vibration.data import fleet_runs
from models.vibration.evaluate import FLEETS


def specs(count: int | None = None) -> list[dict]:
    """``models.vibration.evaluate.FLEETS['test']``'s machines: machine spec, run spec and simulator seed each."""
    return [{"machine": dataclasses.asdict(entry.machine), "run": dataclasses.asdict(entry.run), "seed": entry.seed}
            for entry in fleet_runs(FLEETS["test"])[:count]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    json.dump(specs(int(args[0]) if args else None), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

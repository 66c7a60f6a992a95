"""The vibration task's maintenance command: ``edge-agent reset-baseline``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.tasks.base import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sensor", help="sensor id or pattern, e.g. 'pump-*'")


def _reset(args: argparse.Namespace, config: Any) -> int:
    from models.vibration.runtime.monitor import reset_baseline

    removed = reset_baseline(config.state_dir / "vibration", args.sensor)
    if not removed:
        print(f"edge-agent reset-baseline: no learned baseline matches {args.sensor!r} in "
              f"{config.state_dir / 'vibration'}; check the sensor id (patterns like 'pump-*' work)",
              file=sys.stderr)
        return 1
    print(f"reset {len(removed)} baseline(s): {', '.join(removed)}; "
          "a running agent starts re-learning them within seconds")
    return 0


RESET_BASELINE = Command(
    name="reset-baseline",
    help="Forget learned normal states after maintenance (next data re-learns).",
    example="edge-agent reset-baseline --config /etc/edge-agent/agent.yaml 'pump-7'",
    add_arguments=_arguments,
    run=_reset,
)
COMMANDS = (RESET_BASELINE,)

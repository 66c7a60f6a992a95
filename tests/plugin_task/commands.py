"""The level task's maintenance command: ``edge-agent level-threshold`` prints the configured threshold."""

from __future__ import annotations

import argparse
from typing import Any

from agent.tasks.base import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", action="store_true", help="print in dBFS (the default)")


def _show(args: argparse.Namespace, config: Any) -> int:
    print(f"level threshold: {config.tasks.level.threshold_dbfs} dBFS")
    return 0


COMMANDS = (Command(name="level-threshold", help="Print the level task's alarm threshold.",
                    example="edge-agent level-threshold --config agent.yaml", add_arguments=_arguments, run=_show),)

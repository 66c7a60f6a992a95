"""The quality task's station command, ``edge-agent quality relearn|false-reject|stations``.

Kept light (``edge-agent --help`` imports it): the stations' store loads only when it runs.  Stations
live in ``<state_dir>/quality/stations``; a running agent notices a relearn or a false reject within
seconds (its next tick), a stopped one at its next start.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.tasks.base import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="quality_action", required=True, metavar="ACTION")
    relearn = actions.add_parser("relearn", help="forget a station's learned normal (after a product change); "
                                                 "its next learn_frames frames must be good parts")
    relearn.add_argument("camera", help="camera sensor id or pattern, e.g. 'camera-*'")
    false_reject = actions.add_parser("false-reject", help="mark a reject as a good part: the station takes its "
                                                           "defect area in as normal")
    false_reject.add_argument("camera", help="the camera sensor id of the reject")
    false_reject.add_argument("part_id", help="the reject's part_id (from its part_inspected event)")
    actions.add_parser("stations", help="the cameras with a learned normal")


def _run(args: argparse.Namespace, config: Any) -> int:
    from agent.tasks.quality.stations import StationStore

    store = StationStore(config.state_dir / "quality" / "stations")
    if args.quality_action == "relearn":
        removed = store.reset(args.camera)
        if not removed:
            print(f"edge-agent quality relearn: no learned station matches {args.camera!r} in {store.directory}",
                  file=sys.stderr)
            return 1
        print(f"forgot {len(removed)} station normal(s): {', '.join(removed)}; a running agent starts learning "
              "them from their next frames within seconds: show them good parts")
        return 0
    if args.quality_action == "false-reject":
        if store.reject_points(args.camera, args.part_id) is None:
            print(f"edge-agent quality false-reject: no kept reject {args.part_id!r} of {args.camera!r} in "
                  f"{store.directory / 'rejects'} (the last rejects of each camera are kept)", file=sys.stderr)
            return 1
        store.request_false_reject(args.camera, args.part_id)
        print(f"queued: {args.camera} {args.part_id} is a good part; the agent takes it in within seconds "
              "(a false_reject_learned event says so)")
        return 0
    cameras = store.cameras()
    if not cameras:
        print(f"no camera has a learned station normal in {store.directory} (tasks.quality.station_normal is "
              "off by default; docs/quality.md)")
    for camera in cameras:
        print(camera)
    return 0


QUALITY = Command(
    name="quality",
    help="Quality stations: relearn a camera's normal, mark a false reject, list learned stations.",
    example="edge-agent quality --config /etc/edge-agent/agent.yaml relearn camera-03",
    add_arguments=_arguments,
    run=_run,
)
COMMANDS = (QUALITY,)

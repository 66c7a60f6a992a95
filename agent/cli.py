"""The ``edge-agent`` command: run, demo, replay, record, capture, validate-config, tail, check-replay, and the
tasks' own maintenance commands (e.g. the vibration task's reset-baseline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import __version__
from sensors.sample import recording_path

DEBUG_HELP = "show the traceback of an expected failure instead of its one-line message"
EXAMPLES = {
    "run": "edge-agent run --config /etc/edge-agent/agent.yaml\n"
           "  edge-agent run --config config/demo.yaml --recording line3.mcap --speed 10",
    "demo": "edge-agent demo            # about 3 minutes of simulated factory streams\n"
            "  edge-agent demo --duration 60",
    "replay": "edge-agent replay line3.mcap --mqtt localhost:1883 --speed 1\n"
              "  edge-agent replay line3.mcap --zmq tcp://127.0.0.1:5556 --fast",
    "simulate": "edge-agent simulate --mqtt localhost:1883          # the demo's sensors, live, until Ctrl-C\n"
                "  edge-agent simulate --out sample.mcap --duration 20   # or recorded, for replay",
    "record": "edge-agent record --mqtt localhost:1883 --out line3.mcap --duration 600",
    "validate-config": "edge-agent validate-config /etc/edge-agent/agent.yaml",
    "tail": "edge-agent tail --mqtt localhost:1883            # all devices\n"
            "  edge-agent tail --mqtt broker:8883 --device line3 --ca ca.crt --cert op.crt --key op.key",
    "report": "edge-agent report /var/lib/edge-agent/events.jsonl --out shift.html",
    "check-replay": "edge-agent check-replay events.jsonl tests/data/expected-events.jsonl",
    "capture": "edge-agent capture audio --input meeting.flac --sensor mic-01 --mqtt localhost:1883\n"
               "  edge-agent capture audio --input alsa:hw:1,0 --sensor mic-01 --zmq tcp://127.0.0.1:5556\n"
               "  edge-agent capture audio --input rtsp://camera-3/audio --sensor mic-03 --mqtt broker:1883",
}


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default where it has one worth saying, and keeps the example's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: {action.default})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="Streaming monitoring daemon for factory sensor streams.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'edge-agent COMMAND --help' for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help_text: str, handler_path: str, example: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text,
            epilog="example:\n  " + (example or EXAMPLES[name]), formatter_class=DefaultsFormatter)
        sub.set_defaults(handler=lambda args: _call(handler_path, args), command=name)
        # also after the command name; SUPPRESS keeps a --debug given before it
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        return sub

    run = command("run", "Run the agent daemon (systemd: Type=notify).", "agent.commands:run")
    run.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    run.add_argument("--recording", type=recording_path,
                     help="read sensor input from this recording instead ('sample': the shipped 8 s sample)")
    run.add_argument("--speed", type=float, help="recording speed factor (default: as fast as possible)")
    run.add_argument("--duration", type=float, help="stop after this many seconds")

    demo = command("demo", "Run the agent on simulated factory streams, printing alerts (no broker).",
                   "agent.commands:demo")
    demo.add_argument("--duration", type=float, default=180, help="seconds to run (default 180)")
    demo.add_argument("--config", type=Path, help="demo config (default: the packaged config/demo.yaml)")
    demo.add_argument("--all-events", action="store_true", help="print info events too")

    replay = command("replay", "Publish a recording to MQTT or ZeroMQ with its timing, faster, or at once.",
                     "agent.commands:replay")
    replay.add_argument("recording", type=recording_path,
                        help="an MCAP recording; 'sample' is the shipped 8 s sample of the demo's factory")
    _target_arguments(replay)
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="timing factor (default 1 = original)")
    pace.add_argument("--fast", action="store_true", help="as fast as possible")

    simulate = command("simulate", "Publish the demo's simulated factory sensors to MQTT or ZeroMQ, or record them.",
                       "agent.simulate:simulate")
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--mqtt", help="broker host:port")
    target.add_argument("--zmq", help="ZeroMQ endpoint the agent's zmq source binds, e.g. tcp://127.0.0.1:5556")
    target.add_argument("--out", type=Path, help="write an MCAP recording instead (as fast as generated)")
    simulate.add_argument("--prefix", default="edge", help="MQTT topic prefix (default edge)")
    simulate.add_argument("--config", type=Path,
                          help="take the simulator source of this config (default: the packaged demo.yaml)")
    simulate.add_argument("--duration", type=float,
                          help="seconds of sensor time (default: until Ctrl-C; 30 with --out)")
    simulate.add_argument("--seed", type=int, help="random seed (default: the config's)")

    record = command("record", "Capture live sensor streams to an MCAP recording.", "agent.commands:record")
    _target_arguments(record)
    record.add_argument("--out", type=Path, required=True, help="recording file to write")
    record.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    _connect_timeout(record)

    validate = command("validate-config", "Validate a configuration file and exit (0 = valid).",
                       "agent.commands:validate_config")
    validate.add_argument("config", type=Path)

    tail = command("tail", "Watch alert, health and status topics, printed readably (duplicates dropped).",
                   "agent.commands:tail")
    tail.add_argument("--mqtt", default="localhost:1883", help="broker host:port")
    tail.add_argument("--prefix", default="edge", help="topic prefix")
    tail.add_argument("--device", default="+", help="device id ('+' = all devices)")
    tail.add_argument("--severity", choices=("info", "warning", "alarm"), default="info",
                      help="show events at or above this severity")
    tail.add_argument("--task", action="append", default=[], help="only this task (fnmatch; repeatable)")
    tail.add_argument("--type", action="append", default=[],
                      help="only this event type (fnmatch; repeatable); info events of these types are shown "
                           "one by one")
    tail.add_argument("--sensor", action="append", default=[], help="only this sensor (fnmatch; repeatable)")
    tail.add_argument("--summary-s", type=float, default=60.0,
                      help="routine (info) events are summarised once per this many seconds")
    tail.add_argument("--every", action="store_true", help="print every info event instead of a summary")
    tail.add_argument("--no-colour", action="store_true", help="no colours (also: NO_COLOR set, or not a terminal)")
    tail.add_argument("--json", action="store_true", help="print raw JSON events (no filters or summaries)")
    tail.add_argument("--count", type=int, help="exit after this many events")
    _connect_timeout(tail)
    for option in ("ca", "cert", "key", "username", "password-file"):
        tail.add_argument(f"--{option}", help=f"TLS/auth: {option}")

    from agent.tasks import task_commands

    for task_command in task_commands():
        sub = command(task_command.name, task_command.help, "agent.commands:task_command", task_command.example)
        sub.add_argument("--config", type=Path, required=True, help="the agent's YAML configuration file")
        task_command.add_arguments(sub)
        sub.set_defaults(task_command=task_command)

    report = command("report", "Make one self-contained HTML page of an events file (a shift, a replay).",
                     "agent.commands:report")
    report.add_argument("events", type=Path, help="JSON Lines events (a jsonl sink's file)")
    report.add_argument("--out", type=Path, required=True, help="HTML file to write")
    report.add_argument("--attachments", type=Path,
                        help="folder of <event_id>.jpg crops (default: 'attachments' beside the events file)")

    capture = command("capture", "Publish a microphone or a camera: a file, URL or capture device as wire messages.",
                      "agent.commands:capture")
    capture.add_argument("what", choices=("audio", "camera"), help="a microphone (audio) or a camera")
    capture.add_argument("--input", required=True,
                         help="file, URL (rtsp://, http://) or device (alsa:hw:1,0, pulse:default, v4l2:/dev/video0)")
    capture.add_argument("--sensor", required=True, help="sensor id to publish as, e.g. mic-01")
    _target_arguments(capture)
    capture.add_argument("--fast", action="store_true", help="files: as fast as possible, not in real time")
    capture.add_argument("--chunk-s", type=float, default=0.1, help="seconds of audio per message (default 0.1)")
    capture.add_argument("--rate", type=int, help="resample to this rate, Hz (default: the source's)")
    capture.add_argument("--fps", type=float, default=2.0, help="camera: frames a second to publish")
    capture.add_argument("--quality", type=int, default=90, choices=range(30, 96), metavar="30-95",
                         help="camera: JPEG quality")
    _connect_timeout(capture)

    check = command("check-replay", "Compare events from a replay with an expected-events file.",
                    "agent.commands:check_replay")
    check.add_argument("actual", type=Path, help="JSONL events the agent produced")
    check.add_argument("expected", type=Path, help="JSONL expected events")
    check.add_argument("--time-tolerance", type=float, default=2.0, help="seconds")
    check.add_argument("--score-tolerance", type=float, default=0.1, help="relative")
    return parser


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--mqtt", help="broker host:port")
    target.add_argument("--zmq", help="ZeroMQ endpoint, e.g. tcp://127.0.0.1:5556")
    parser.add_argument("--prefix", default="edge", help="MQTT topic prefix")


def _connect_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for the MQTT broker before giving up (default 10)")


def _call(path: str, args: argparse.Namespace) -> int:
    # commands import their heavy dependencies only when they run, so --help stays instant
    import importlib

    from sensors.errors import EdgeAgentError, exit_code

    module, _, name = path.partition(":")
    try:
        result: int = getattr(importlib.import_module(module), name)(args)
        return result
    except KeyboardInterrupt:
        return 130
    except EdgeAgentError as error:  # an expected failure: one line saying what to do, not a traceback
        if args.debug:
            raise
        print(f"edge-agent {args.command}: {error}", file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    sys.exit(main())

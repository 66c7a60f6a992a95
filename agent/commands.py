"""What each ``edge-agent`` subcommand does (argument parsing lives in agent.cli)."""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from agent.config import AgentConfig, ConfigError, load_config
from agent.logs import configure_logging
from sensors.errors import EdgeAgentError, RecordingError

REPO_ROOT = Path(__file__).resolve().parents[1]
# a checkout first, then what `pip install` put under share/ (setup.cfg data_files)
DEMO_CONFIGS = (REPO_ROOT / "config" / "demo.yaml", Path(sys.prefix) / "share" / "edge-agent" / "config" / "demo.yaml")


def run(args: argparse.Namespace) -> int:
    """The daemon: preflight and the locks first, so that a bad config or a second agent connects to nothing."""
    from agent import preflight
    from agent.daemon import Agent
    from agent.locks import AgentLocks

    config = load_config(args.config)
    if args.recording:
        from sensors.sources.recording import RecordingSourceConfig

        config = config.model_copy(update={"sources": [
            RecordingSourceConfig(kind="recording", path=args.recording, speed=args.speed)]})
    preflight.check(config)
    configure_logging(config.log.level, config.log.format)
    for warning in preflight.warnings(config):
        structlog.get_logger(__name__).warning("config", warning=warning)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with AgentLocks(config.state_dir, config.device):
        agent = Agent(config, args.config)
        agent.install_signal_handlers()
        agent.start()
        code = agent.run(duration_s=args.duration, until_sources_finish=args.recording is not None)
    stopped_early = [source.error for source in agent.sources if source.error]
    if stopped_early and code == 0:  # the events so far are out, but the input was not read to its end
        raise RecordingError(f"{stopped_early[0]}; the events up to that point were produced")
    return _leave_busy_tasks(agent, code)


def demo(args: argparse.Namespace) -> int:
    """The agent on simulated factory streams, printing alerts; no broker needed."""
    from agent.daemon import Agent

    path = args.config or next((p for p in DEMO_CONFIGS if p.exists()), DEMO_CONFIGS[0])
    state_dir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    config = load_config(path, overrides={"state_dir": str(state_dir)})
    if args.all_events:
        config = _console_min_severity(config, "info")
    configure_logging(config.log.level, config.log.format)
    print(f"edge-agent demo: simulated factory for {args.duration:.0f} s (Ctrl-C stops); "
          f"events also in {state_dir}/events.jsonl", flush=True)
    agent = Agent(config, path)
    agent.install_signal_handlers()
    agent.start()
    code = agent.run(duration_s=args.duration)
    _print_summary(agent.report_stats(), state_dir / "events.jsonl")
    print(f"\na page to look at: edge-agent report {state_dir / 'events.jsonl'} --out report.html", flush=True)
    return _leave_busy_tasks(agent, code)


def _leave_busy_tasks(agent: Any, code: int) -> int:
    """Exit at once when a task is still inside a model run after the stop: the interpreter's shutdown would
    tear ONNX Runtime down under the running call (std::terminate, exit 134). Everything the agent made is in
    the outbox or delivered by now, and the outbox is closed."""
    if agent.busy_tasks():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _console_min_severity(config: AgentConfig, severity: str) -> AgentConfig:
    sinks = [sink.model_copy(update={"min_severity": severity}) if sink.kind == "console" else sink
             for sink in config.sinks]
    return config.model_copy(update={"sinks": sinks})


def _print_summary(stats: dict[str, Any], events_path: Path) -> None:
    counts: collections.Counter[str] = collections.Counter()
    if events_path.exists():
        for line in events_path.read_text().splitlines():
            event = json.loads(line)
            counts[f"{event['task']}/{event['type']}"] += 1
    print("\nsummary of events:", flush=True)
    for name, count in sorted(counts.items()):
        print(f"  {name:40s} {count}")
    for name, task in stats["tasks"].items():
        print(f"  task {name}: processed {task['processed']}, p50 {task.get('latency_p50_ms', 0)} ms, "
              f"p99 {task.get('latency_p99_ms', 0)} ms, errors {task['errors']}")


def validate_config(args: argparse.Namespace) -> int:
    """Validate, then check what ``run`` needs (models, thresholds, secrets, state dir); print what would run."""
    from agent import preflight

    config = load_config(args.config)
    preflight.check(config)
    for warning in preflight.warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    tasks = ", ".join(config.task_configs()) or "none"
    print(f"{args.config}: valid (device {config.device}; {len(config.sources)} source(s), "
          f"{len(config.sinks)} sink(s); tasks: {tasks})")
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"expected host:port, got {text!r}; e.g. --mqtt localhost:1883")
    return host, int(port)


def replay(args: argparse.Namespace) -> int:
    """Publish a recording to MQTT or ZeroMQ; the recording is checked before any connection is made."""
    from sensors.recording import RecordingReader
    from sensors.replay import MqttPublisher, ZmqPublisher
    from sensors.replay import replay as replay_recording

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    with RecordingReader(args.recording) as reader:
        if not reader.complete:
            print(f"warning: {args.recording} was not closed properly: {reader.damage}", file=sys.stderr)
        publisher: Any = (MqttPublisher(*_host_port(args.mqtt)) if args.mqtt
                          else ZmqPublisher(args.zmq, mode="push"))
        with publisher:
            count = replay_recording(reader, publisher.publish, None if args.fast else args.speed, stop)
    if count == 0 and not stop.is_set():
        raise RecordingError(f"{args.recording} holds no sensor messages; nothing was replayed")
    print(f"replayed {count} messages in {time.monotonic() - started:.1f} s")
    return 0


def capture(args: argparse.Namespace) -> int:
    """Publish an audio or video file, URL or capture device as wire messages (PyAV decodes all of them)."""
    from sensors.capture import capture as capture_audio
    from sensors.capture import capture_camera, open_container
    from sensors.replay import MqttPublisher, ZmqPublisher
    from sensors.wire import check_sensor_id

    check_sensor_id(args.sensor)
    if not 0.01 <= args.chunk_s <= 5:
        raise ConfigError(f"--chunk-s must be between 0.01 and 5 seconds, got {args.chunk_s}")
    if not 0.01 <= args.fps <= 120:
        raise ConfigError(f"--fps must be between 0.01 and 120, got {args.fps}")
    camera = args.what == "camera"
    open_container(args.input, "video" if camera else "audio")[0].close()  # a bad --input fails before connecting
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    publisher: Any = (MqttPublisher(*_host_port(args.mqtt), timeout_s=args.connect_timeout) if args.mqtt
                      else ZmqPublisher(args.zmq, mode="push"))
    with publisher:
        if camera:
            count = capture_camera(args.input, args.sensor, publisher.publish, prefix=args.prefix, fps=args.fps,
                                   quality=args.quality, fast=args.fast, stop=stop)
        else:
            count = capture_audio(args.input, args.sensor, publisher.publish, prefix=args.prefix,
                                  chunk_s=args.chunk_s, rate=args.rate, fast=args.fast, stop=stop)
    what = "frames" if camera else "audio messages"
    print(f"published {count} {what} from {args.input} as {args.sensor} in {time.monotonic() - started:.1f} s")
    return 0


def record(args: argparse.Namespace) -> int:
    """Capture live sensor streams (MQTT subscription or ZeroMQ SUB) to an MCAP file."""
    from sensors.recording import RecordingWriter
    from sensors.sources import Ack

    received: queue.Queue[tuple[int, bytes, Ack | None]] = queue.Queue()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    count = 0
    with RecordingWriter(args.out) as writer:  # first: a bad --out fails before anything connects
        source = None
        try:
            source = _recording_source(args)
            source.start(lambda raw, ack=None: received.put((time.time_ns(), raw, ack)))
            if args.mqtt:
                _await_broker(source.connected, args.mqtt, args.connect_timeout)
        except EdgeAgentError:
            if source is not None:
                source.close()
            args.out.unlink(missing_ok=True)  # no empty recording left behind
            raise
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                log_time, raw, ack = received.get(timeout=0.2)
            except queue.Empty:
                continue
            writer.write(raw, log_time)
            if ack is not None:  # MQTT input is acknowledged once it is in the recording
                ack()
            count += 1
        source.close()
        while not received.empty():
            log_time, raw, _ = received.get()  # after close nothing can be acknowledged
            writer.write(raw, log_time)
            count += 1
    invalid = f" ({writer.invalid} not valid wire messages, kept under their own topic)" if writer.invalid else ""
    print(f"recorded {count} messages to {args.out}{invalid}")
    return 0


def _recording_source(args: argparse.Namespace) -> Any:
    """The MQTT or ZeroMQ source ``record`` listens with."""
    import zmq

    from sensors.sources import SourceEnv
    from sensors.sources.mqtt import MqttSource, MqttSourceConfig
    from sensors.sources.zmq import ZmqSource, ZmqSourceConfig

    env = SourceEnv("recorder", zmq.Context.instance(), 64 << 20)
    if args.mqtt:
        host, port = _host_port(args.mqtt)
        return MqttSource(MqttSourceConfig(kind="mqtt", host=host, port=port, topic_prefix=args.prefix), env)
    return ZmqSource(ZmqSourceConfig(kind="zmq", endpoint=args.zmq, socket="sub", bind=False), env)


def _await_broker(connected: threading.Event, address: str, timeout_s: float,
                  refused: Callable[[], str | None] = lambda: None) -> None:
    """Wait for a client's first connection; BrokerError saying why (as the OS or the broker put it) if none."""
    from sensors.errors import BrokerError
    from sensors.mqtt import diagnose

    if connected.wait(timeout_s):
        return
    reason = refused() or diagnose(*_host_port(address), None)
    raise BrokerError(f"no MQTT broker at {address} after {timeout_s:g} s ({reason}); "
                      "start it or fix --mqtt host:port")


def tail(args: argparse.Namespace) -> int:
    """Print events as an operator watches them; duplicates (same event id) are dropped."""
    import os

    from agent.config import MqttConnection, Secret, Tls
    from agent.tail import EventWatcher, OperatorConsole, TailFilter

    host, port = _host_port(args.mqtt)
    tls = Tls(ca_file=args.ca, cert_file=args.cert, key_file=args.key) if args.ca else None
    password = Secret(file=args.password_file) if args.password_file else None
    connection = MqttConnection(host=host, port=port, topic_prefix=args.prefix, tls=tls,
                                username=args.username, password=password)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    colour = sys.stdout.isatty() and not args.no_colour and "NO_COLOR" not in os.environ
    console = OperatorConsole(TailFilter(args.severity, args.task, args.type, args.sensor), args.summary_s,
                              every=args.every, colour=colour)
    seen = 0

    def show(topic: str, message: dict[str, Any]) -> None:
        nonlocal seen
        if args.json:
            print(json.dumps(message), flush=True)
        elif not console.show(topic, message):
            return
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    with EventWatcher(connection, args.device, show) as watcher:
        _await_broker(watcher.connected, args.mqtt, args.connect_timeout, lambda: watcher.refused)
        if not args.json:
            print(f"      connected to {args.mqtt}, waiting for events (device {args.device}; Ctrl-C stops)",
                  flush=True)
        while not done.wait(1.0):
            console.tick(time.monotonic())
    return 0


def task_command(args: argparse.Namespace) -> int:
    """A task's own maintenance command (declared by the task plug-in), run on the validated config."""
    config = load_config(args.config)
    code: int = args.task_command.run(args, config)
    return code


def report(args: argparse.Namespace) -> int:
    """One HTML page of an events file."""
    from agent.report import write_report

    if not args.events.is_file():
        raise RecordingError(f"{args.events}: no such events file")
    count = write_report(args.events, args.out, args.attachments)
    print(f"report of {count} events written to {args.out}")
    return 0


def check_replay(args: argparse.Namespace) -> int:
    """The replay regression check."""
    from agent.replay_check import Tolerances, compare, read_events

    report = compare(read_events(args.actual), read_events(args.expected),
                     Tolerances(time_s=args.time_tolerance, score_relative=args.score_tolerance))
    print(report.render())
    return 0 if report.ok else 1

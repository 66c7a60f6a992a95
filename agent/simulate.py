"""``edge-agent simulate``: the demo's simulated factory published through the wire format, or recorded.

A first alert on a real broker needs sensor data on it: this publishes every task's simulated sensors
(the same streams as the demo, from a config's ``simulator`` source) to MQTT or ZeroMQ in real time,
or writes them to an MCAP recording for ``replay`` and ``run --recording``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.config import ConfigError, load_config
from sensors.topics import sensor_topic
from sensors.wire import encode


def simulator_section(path: Path) -> Any:
    """The validated ``simulator`` source of the config at ``path``."""
    config = load_config(path, overrides={"state_dir": "/nonexistent/edge-agent-simulate"})
    section = next((source for source in config.sources if source.kind == "simulator"), None)
    if section is None:
        raise ConfigError(f"{path} has no source of kind 'simulator' to take the simulated sensors from")
    return section


def simulate(args: argparse.Namespace) -> int:
    """Publish (paced, in real time) or record (as fast as generated) the simulated factory's sensor messages."""
    from agent.commands import DEMO_CONFIGS
    from agent.simulator import merged

    path = args.config or next((p for p in DEMO_CONFIGS if p.exists()), DEMO_CONFIGS[0])
    section = simulator_section(path)
    if args.seed is not None:
        section = section.model_copy(update={"seed": args.seed})
    start_ns = time.time_ns()
    end_ns = start_ns + round(args.duration * 1e9) if args.duration else None
    messages = merged(section, start_ns)
    if args.out:
        return _record(messages, args.out, end_ns or start_ns + 30 * 10**9, args.prefix)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return _publish(messages, args, end_ns, stop)


def _record(messages: Any, out: Path, end_ns: int, prefix: str) -> int:
    from sensors.recording import RecordingWriter

    count = 0
    with RecordingWriter(out, prefix=prefix) as writer:
        for message in messages:
            if message.timestamp_ns >= end_ns:
                break
            writer.write(encode(message), log_time_ns=message.timestamp_ns)
            count += 1
    print(f"recorded {count} simulated messages to {out}")
    return 0


def _publish(messages: Any, args: argparse.Namespace, end_ns: int | None, stop: threading.Event) -> int:
    from agent.commands import _host_port
    from sensors.replay import MqttPublisher, ZmqPublisher

    publisher: Any = MqttPublisher(*_host_port(args.mqtt)) if args.mqtt else ZmqPublisher(args.zmq, mode="push")
    count, started = 0, time.monotonic()
    target = args.mqtt or args.zmq
    print(f"edge-agent simulate: publishing the simulated factory to {target} (Ctrl-C stops)", flush=True)
    with publisher:
        for message in messages:
            if end_ns is not None and message.timestamp_ns >= end_ns:
                break
            delay = (message.timestamp_ns - time.time_ns()) / 1e9
            if (delay > 0 and stop.wait(delay)) or stop.is_set():
                break
            publisher.publish(sensor_topic(args.prefix, message.kind, message.sensor_id), encode(message))
            count += 1
    print(f"published {count} messages in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0

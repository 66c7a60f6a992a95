"""Fuzz a running agent over MQTT and ZeroMQ: N inputs of every kind, mutated, with valid streams interleaved.

    python -m tests.harness.fuzz --inputs 1000000 [--seed 1] [--mqtt-share 0.1] [--skip tiny_rate]

(``make fuzz ARGS=...``.) The agent runs as a subprocess with the probe task (a real ONNX model)
on a ZeroMQ PULL source and an MQTT source of its own broker. Every ``--valid-every`` inputs, each
of two valid streams (one per transport) sends its next chunk. Passes (exit 0) when the agent never
exited, both valid streams still produced their events at the end, and RSS grew by at most
``--rss-growth-mb`` in the second half of the run over the first; prints inputs/s and the figures as a table and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import zmq

from agent.testing import wait_until
from sensors.mqtt import stop_client
from tests.conftest import Broker, free_port
from tests.harness.common import AgentProcess, chunk, probe_agent_config
from tests.harness.mutate import pool
from tests.test_faults import Collector

VALID = {"zmq": "valid-zmq", "mqtt": "valid-mqtt"}
POOL_SIZE = 5000


@dataclass
class FuzzResult:
    inputs: int = 0
    mqtt_inputs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    valid_chunks: dict[str, int] = field(default_factory=dict)
    valid_events: dict[str, int] = field(default_factory=dict)
    valid_alive_at_end: bool = False
    rss_mb: list[float] = field(default_factory=list)  # sampled every tenth of the run

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def rss_growth_mb(self) -> float:
        """How much higher RSS went in the second half of the run than in the first: a leak keeps growing,
        while bounded state (full queues, ``max_sensors`` sensors' windows) is reached within the first half."""
        half = len(self.rss_mb) // 2
        if half < 1:
            return 0.0
        return max(0.0, max(self.rss_mb[half:]) - max(self.rss_mb[:half]))

    def ok(self, rss_growth_limit_mb: float) -> bool:
        return self.crashes == 0 and self.valid_alive_at_end and self.rss_growth_mb <= rss_growth_limit_mb


class Senders:
    """A ZeroMQ PUSH socket and an MQTT client, with flow control so neither side buffers without bound."""

    def __init__(self, zmq_port: int, broker_port: int) -> None:
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, 1000)
        self.push.setsockopt(zmq.SNDTIMEO, 30_000)  # a stuck agent fails the run instead of hanging it
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{zmq_port}")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()
        self.since_barrier = 0

    def zmq(self, payload: bytes) -> None:
        self.push.send(payload, copy=False)

    def mqtt(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.client.publish(topic, payload, qos=qos)
        self.since_barrier += 1
        # A QoS 1 round trip now and then keeps paho's queue short; waiting on each would cost a
        # round trip per message.
        if self.since_barrier >= 2000:
            self.since_barrier = 0
            self.client.publish("edge/sensors/vibration/barrier", b"", qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.push.close(0)
        self.context.term()
        stop_client(self.client)


def run(folder: Path, inputs: int, seed: int, mqtt_share: float, valid_every: int,
        skip: frozenset[str]) -> FuzzResult:
    broker = Broker(folder, free_port()).start()
    zmq_port = free_port()
    sources: list[dict[str, Any]] = [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{zmq_port}"},
               {"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}]
    agent = AgentProcess(folder / "agent", probe_agent_config(folder, folder / "state", sources, broker.port))
    collector: Collector | None = None
    senders: Senders | None = None
    try:
        agent.start()
        collector = Collector(broker.port)
        senders = Senders(zmq_port, broker.port)
        return fuzz(agent, senders, collector, pool(seed, POOL_SIZE, skip), inputs, random.Random(seed),
                    mqtt_share, valid_every)
    finally:
        if senders is not None:
            senders.close()
        agent.stop()
        if collector is not None:
            collector.close()
        broker.stop()


def fuzz(agent: AgentProcess, senders: Senders, collector: Collector, inputs_pool: list[tuple[str, bytes]],
         count: int, rng: random.Random, mqtt_share: float, valid_every: int) -> FuzzResult:
    result = FuzzResult(valid_chunks=dict.fromkeys(VALID.values(), 0))
    result.rss_mb.append(agent.rss_mb())
    started = time.monotonic()
    tenth = max(1, count // 10)
    for index in range(count):
        if index % valid_every == 0:
            send_valid(senders, result)
        _, payload = inputs_pool[rng.randrange(len(inputs_pool))]
        try:
            if rng.random() < mqtt_share:
                senders.mqtt(f"edge/sensors/{rng.choice(('vibration', 'audio', 'frame'))}/fuzz", payload)
                result.mqtt_inputs += 1
            else:
                senders.zmq(payload)
        except zmq.Again:
            if agent.alive:
                raise  # alive but taking nothing for 30 s: stuck, which the run reports as an error
        result.inputs += 1
        if (index + 1) % tenth == 0 or not agent.alive:
            restart_if_dead(agent, result)
            result.rss_mb.append(agent.rss_mb())
    result.seconds = time.monotonic() - started
    restart_if_dead(agent, result)
    # after a crash the run has failed already: no need to wait for the valid streams
    result.valid_alive_at_end = not result.crashes and still_producing(agent, senders, collector, result)
    if not agent.alive:
        result.crashes += 1
        result.exit_codes.append(agent.exit_code)
    result.valid_events = events_per_sensor(collector)
    return result


def restart_if_dead(agent: AgentProcess, result: FuzzResult) -> None:
    if agent.restart_if_exited():
        result.crashes += 1
        result.exit_codes.append(agent.crash_codes[-1])


def send_valid(senders: Senders, result: FuzzResult) -> None:
    for transport, sensor in VALID.items():
        payload = chunk(sensor, result.valid_chunks[sensor])
        result.valid_chunks[sensor] += 1
        if transport == "zmq":
            senders.zmq(payload)
        else:
            senders.mqtt(f"edge/sensors/vibration/{sensor}", payload, qos=1)


def events_per_sensor(collector: Collector) -> dict[str, int]:
    with collector.lock:
        sensors = [event["sensor"] for event in collector.events if event["sensor"] in VALID.values()]
    return {sensor: sensors.count(sensor) for sensor in VALID.values()}


def still_producing(agent: AgentProcess, senders: Senders, collector: Collector, result: FuzzResult) -> bool:
    """After the fuzz, each valid stream, still sending, must produce new events within 60 s (an exit ends the wait).

    The streams keep sending (a window of chunks every round) because the chunks sent first may still sit
    behind the fuzz backlog, or be dropped at a full ZeroMQ queue, which is the transport's overload policy.
    """
    before = events_per_sensor(collector)

    def produced() -> bool:
        return all(events_per_sensor(collector)[s] > before[s] for s in VALID.values())

    deadline = time.monotonic() + 60
    while agent.alive and not produced() and time.monotonic() < deadline:
        for _ in range(4):
            send_valid(senders, result)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: produced() or not agent.alive, 2)
    return agent.alive and produced()


def render(result: FuzzResult) -> str:
    rows = [("inputs", result.inputs), ("of which over MQTT", result.mqtt_inputs),
            ("inputs/s", f"{result.inputs_per_s:,.0f}"), ("crashes (agent exits)", result.crashes),
            ("exit codes", result.exit_codes or "-"),
            ("valid chunks sent", result.valid_chunks), ("valid events (expected: chunks / 4)", result.valid_events),
            ("valid streams alive at the end", result.valid_alive_at_end),
            ("RSS MiB start / max / end", " / ".join(f"{v:.0f}" for v in (result.rss_mb[0], max(result.rss_mb),
                                                                         result.rss_mb[-1]))),
            ("RSS growth, second half over first, MiB", f"{result.rss_growth_mb:.1f}")]
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mqtt-share", type=float, default=0.1, help="share of fuzz inputs sent over MQTT")
    parser.add_argument("--valid-every", type=int, default=50, help="a valid chunk per stream every N inputs")
    parser.add_argument("--skip", action="append", default=[], help="leave a mutation out (e.g. tiny_rate)")
    parser.add_argument("--rss-growth-mb", type=float, default=100.0,
                        help="RSS growth allowed: second half of the run over the first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-agent-fuzz-") as folder:
        result = run(Path(folder), args.inputs, args.seed, args.mqtt_share, args.valid_every, frozenset(args.skip))
    print(render(result))
    figures: dict[str, Any] = {**asdict(result), "inputs_per_s": result.inputs_per_s,
                               "rss_growth_mb": result.rss_growth_mb}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if result.ok(args.rss_growth_mb) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak: randomised fault rounds against the agent, compared with an unfaulted reference run of the same recording.

    python -m tests.harness.soak [--rounds 1000 | --duration-s 3600] [--seed 1] [--autosave-s 30]

(``make soak ARGS=...``; not part of ``make test``.) A deterministic MCAP recording (two vibration
sensors, a few seconds each) is published over MQTT (QoS 1) to a persistent Mosquitto, once per
round with its sequence numbers and times moved on, to an agent subprocess (MQTT source with a
persistent session, probe task with a real ONNX model, MQTT sink) whose events a persistent
subscriber collects. Each round applies one fault while the round's input is being published:
agent SIGKILL (then restart), broker SIGKILL (then restart; it saves every ``--autosave-s`` s as the
shipped mosquitto.conf does), broker freeze (SIGSTOP for up to 2 s, SIGCONT), disk full (the state
directory is a small tmpfs, filled for a second; root only, else skipped) or a fuzz burst. Events are
matched with the reference run on sensor, task, type and source time; the table gives per topic the
events expected, lost, duplicated and out of order, and overall the crashes (agent exits not caused
by the harness) and the agent's RSS. A lost event whose input never reached the agent (no run of the
agent, whose debug log names every sensor message it received, had all the chunks of its window: e.g.
sensor messages a killed broker had acknowledged but not saved) is counted apart from one the agent
lost. Exit status 0 only when the agent lost nothing and nothing crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.events import iso_time
from sensors.recording import RecordingReader, RecordingWriter
from sensors.replay import MqttPublisher
from sensors.wire import SensorMessage, decode, encode
from tests.conftest import Broker, free_port
from tests.harness.common import BASE_NS, RATE, SAMPLES, AgentProcess, chunk, event_key, probe_agent_config
from tests.harness.mutate import pool
from tests.test_faults import RUN_AS_CALLER, Collector

SENSORS = ("pump-a", "pump-b")
CHUNKS = 16  # per sensor and round: four 1 s windows of the probe task
CHUNK_NS = int(SAMPLES / RATE * 1e9)
CHUNKS_PER_WINDOW = int(RATE / SAMPLES)  # the probe task's 1 s windows
# Rounds are this many chunks apart: the sequence gap between rounds restarts the agent's windows at
# each round's first chunk, so a fault's effect on window alignment stays within its round.
STEP = CHUNKS + 4
FAULTS = ("agent_kill", "broker_kill", "broker_freeze", "disk_full", "fuzz_burst")
Key = tuple[str, str, str, str]


def write_recording(path: Path) -> Path:
    """The soak's input: CHUNKS chunks per sensor, interleaved, the same bytes on every run."""
    with RecordingWriter(path) as writer:
        for seq in range(CHUNKS):
            for sensor in SENSORS:
                writer.write(chunk(sensor, seq), log_time_ns=seq * CHUNK_NS + 1)
    return path


def round_input(recording: Path, round_number: int) -> list[tuple[str, bytes]]:
    """The recording moved on by ``round_number`` rounds (sequence numbers and times), as (topic, bytes)."""
    shifted = []
    with RecordingReader(recording) as reader:
        for _, topic, raw in reader:
            message = decode(raw)
            moved = SensorMessage(message.sensor_id, message.kind, message.seq + round_number * STEP,
                                  message.timestamp_ns + round_number * STEP * CHUNK_NS, message.samples,
                                  message.sample_rate)
            shifted.append((topic, encode(moved)))
    return shifted


def shift_key(key: Key, round_number: int) -> Key:
    """A reference event's key as it should come out of round ``round_number``."""
    sensor, task, kind, source_time = key
    return sensor, task, kind, iso_time(parse_ns(source_time) + round_number * STEP * CHUNK_NS)


def round_of(key: Key) -> int:
    """The round whose input an expected event's source time falls in."""
    return (parse_ns(key[3]) - BASE_NS) // (STEP * CHUNK_NS)


def received_by_run(agent: AgentProcess) -> list[set[tuple[str, int]]]:
    """(sensor, seq) of every sensor message each run of the agent received (its debug log names each one)."""
    runs = []
    for log in sorted(agent.folder.glob("run-*/agent.log")):
        received = set()
        for line in log.read_text(errors="replace").splitlines():
            if '"sensor message"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by an agent SIGKILL
                continue
            received.add((entry["sensor"], entry["seq"]))
        runs.append(received)
    return runs


def made_events(folder: Path) -> set[Key]:
    """Keys of every event the agent made (its jsonl sink, outside the state directory that disk_full fills)."""
    journal = folder / "made-events.jsonl"
    if not journal.exists():
        return set()
    keys = set()
    for line in journal.read_text(errors="replace").splitlines():
        try:
            keys.add(event_key(json.loads(line)))
        except (ValueError, KeyError):  # a line cut by an agent SIGKILL
            continue
    return keys


def input_missing(key: Key, runs: list[set[tuple[str, int]]]) -> bool:
    """Whether no run of the agent received every chunk of the expected event's window.

    Only a window whose whole input reached one run can be lost by the agent: a chunk that never arrived,
    or that arrived only in a run killed before the window was complete and was not sent again (the broker
    lost it, or the session holding it), is lost upstream. Gaps the agent reports cannot tell this: a chunk
    lost at the end of the run, or just before an agent restart (a new run starts its windows afresh), is
    followed by no gap."""
    first = (parse_ns(key[3]) - BASE_NS) // CHUNK_NS
    window = {(key[0], seq) for seq in range(first, first + CHUNKS_PER_WINDOW)}
    return not any(window <= received for received in runs)


def parse_ns(text: str) -> int:
    """Inverse of agent.events.iso_time (microseconds)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    return seconds * 10**9 + int(fraction.ljust(6, "0")[:6]) * 1000


@dataclass
class Rig:
    """Broker, agent, sensor publisher and event collector of one soak or reference run."""

    folder: Path
    broker: Broker
    agent: AgentProcess
    publisher: MqttPublisher
    collector: Collector
    state: Path


def broker_config(broker: Broker, folder: Path, autosave_s: int) -> None:
    """Persistence as on a plant's broker: saved every ``autosave_s`` seconds, not on every change.

    Mosquitto started as root drops to the ``mosquitto`` user and then cannot write its database into the
    harness's folder ("Error saving in-memory database"): every broker SIGKILL would then lose every session
    and queued message, not just what came since the last save. ``user root`` keeps it able to save."""
    broker.config.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval {autosave_s}\n"
                             f"max_queued_messages 100000\n{RUN_AS_CALLER}")


@contextmanager
def state_directory(folder: Path, size_mb: int = 48) -> Iterator[tuple[Path, bool]]:
    """The agent's state directory: a small tmpfs when this process may mount one (so it can be filled)."""
    state = folder / "state"
    state.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(state)], capture_output=True,
        check=False).returncode == 0
    try:
        yield state, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state)], capture_output=True, check=False)


@contextmanager
def rig(folder: Path, state: Path, autosave_s: int) -> Iterator[Rig]:
    folder.mkdir(parents=True, exist_ok=True)
    broker = Broker(folder, free_port())
    broker_config(broker, folder, autosave_s)
    broker.start()
    sources = [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port, "keepalive_s": 2,
                "client_id": "soak-agent-in"}]
    config = probe_agent_config(folder, state, sources, broker.port, journal=folder / "made-events.jsonl")
    config["log"]["level"] = "debug"  # every sensor message received is logged: see received_by_run
    agent = AgentProcess(folder / "agent", config)
    agent.start()
    collector = Collector(broker.port)
    sensors = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-sensors", protocol=mqtt.MQTTv5)
    sensors.reconnect_delay_set(1, 2)  # paho's default backs off to 2 min: rounds are seconds long
    publisher = MqttPublisher("127.0.0.1", broker.port, client=sensors, timeout_s=120)
    try:
        yield Rig(folder, broker, agent, publisher, collector, state)
    finally:
        for close in (publisher.close, agent.stop, collector.close, broker.stop):
            try:
                close()
            except Exception as error:  # the run's figures matter more than a close error
                print(f"soak: closing: {error}", file=sys.stderr)


def agent_kill(rig: Rig, rng: random.Random) -> None:
    rig.agent.kill()
    rig.agent.start()


def broker_kill(rig: Rig, rng: random.Random) -> None:
    rig.broker.kill()
    time.sleep(rng.uniform(0.0, 1.0))  # the outage itself is the fault: no event to wait for
    rig.broker.start()


def broker_freeze(rig: Rig, rng: random.Random) -> None:
    assert rig.broker.process is not None
    rig.broker.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(rng.uniform(0.2, 2.0))  # a frozen broker, as under a swap storm or a debugger
    finally:
        rig.broker.process.send_signal(signal.SIGCONT)


def disk_full(rig: Rig, rng: random.Random, mounted: bool) -> None:
    if not mounted:
        return
    filler = rig.state / "soak-filler"
    try:
        with filler.open("wb", buffering=0) as handle:  # unbuffered: closing it has nothing left to write
            block = b"\0" * 2**20
            while True:
                try:
                    handle.write(block)
                except OSError:
                    break
    except OSError as error:  # ENOSPC at the very open: the tmpfs is full already, which is the fault
        print(f"soak: disk full: the state directory was full before the filler ({error})", file=sys.stderr)
    try:
        time.sleep(rng.uniform(0.3, 1.5))  # how long the disk stays full is the fault itself
    finally:
        filler.unlink(missing_ok=True)


def fuzz_burst(rig: Rig, rng: random.Random, inputs: list[tuple[str, bytes]]) -> None:
    for _ in range(rng.randint(100, 500)):
        _, payload = inputs[rng.randrange(len(inputs))]
        rig.publisher.publish(f"edge/sensors/{rng.choice(('vibration', 'audio', 'frame'))}/fuzz", payload)


def publish_round(rig: Rig, messages: list[tuple[str, bytes]], fault: Callable[[], None], at: int) -> None:
    """Publish the round's input, spread over about a second, with the fault applied before message ``at``."""
    for index, (topic, payload) in enumerate(messages):
        if index == at:
            fault()
        rig.publisher.publish(topic, payload)
        time.sleep(1.0 / len(messages))


def collect(rig: Rig, expected: set[Key], settle_s: float, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until every expected event arrived, or nothing new came for ``settle_s``; returns all events."""
    deadline = time.monotonic() + timeout_s
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        with rig.collector.lock:
            events = list(rig.collector.events)
        if expected <= {event_key(event) for event in events}:
            return events
        if len(events) != last:
            last, quiet_since = len(events), time.monotonic()
        elif time.monotonic() - quiet_since > settle_s:
            return events
        time.sleep(0.2)
    with rig.collector.lock:
        return list(rig.collector.events)


def reference_keys(folder: Path, recording: Path, autosave_s: int, settle_s: float) -> set[Key]:
    """The events of one unfaulted round: what every round must produce, moved on in time."""
    state = folder / "reference-state"
    state.mkdir(parents=True)
    with rig(folder / "reference", state, autosave_s) as running:
        publish_round(running, round_input(recording, 0), lambda: None, -1)
        events = collect(running, set(), settle_s=min(settle_s, 5), timeout_s=60)
    keys = {event_key(event) for event in events}
    if not keys:
        raise RuntimeError("the reference run produced no events")
    return keys


@dataclass
class TopicFigures:
    expected: int = 0
    lost: int = 0  # by the agent: every chunk of the window reached one run of it
    lost_upstream: int = 0  # no run of the agent received every chunk of the window
    lost_in_delivery: int = 0  # of ``lost``: the agent made the event (its jsonl sink has it), MQTT lost it
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0  # events matching no reference key, e.g. windows cut elsewhere after lost input


def compare(expected: set[Key], events: list[dict[str, Any]], runs: list[set[tuple[str, int]]] | None = None,
            made: set[Key] | None = None) -> dict[str, TopicFigures]:
    """Per topic (sensor and event type): expected, lost (by the agent, or upstream when ``runs``, the input each
    agent run received, shows that no run had the whole window), duplicated, out-of-order first deliveries,
    unexpected."""
    table: dict[str, TopicFigures] = {}
    received = Counter(event_key(event) for event in events)
    for key in expected:
        figures = table.setdefault(f"{key[0]}/{key[2]}", TopicFigures())
        figures.expected += 1
        if received[key] == 0 and runs is not None and input_missing(key, runs):
            figures.lost_upstream += 1
        else:
            figures.lost += received[key] == 0
            figures.lost_in_delivery += received[key] == 0 and key in (made or set())
        figures.duplicated += max(0, received[key] - 1)
    seen: set[Key] = set()
    last: dict[str, str] = {}
    for event in events:
        key = event_key(event)
        topic = f"{key[0]}/{key[2]}"
        if topic in table and key not in expected:
            table[topic].unexpected += 1
        if key in seen or key not in expected:
            continue
        seen.add(key)
        table[topic].out_of_order += key[3] < last.get(topic, "")
        last[topic] = max(key[3], last.get(topic, ""))
    return table


NUMBERS = ("expected", "lost", "lost_in_delivery", "lost_upstream", "duplicated", "out_of_order", "unexpected")


@dataclass
class SoakResult:
    rounds: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    table: dict[str, TopicFigures] = field(default_factory=dict)
    crashes: int = 0
    exit_codes: list[int | None] = field(default_factory=list)
    rss_mb_before: float = 0.0
    rss_mb_after: float = 0.0
    disk_full_available: bool = True
    broker_save_errors: int = 0  # the broker failed to write its database: a broker SIGKILL then loses everything
    seconds: float = 0.0
    lost_by_fault: Counter[str] = field(default_factory=Counter)
    lost_upstream_by_fault: Counter[str] = field(default_factory=Counter)
    lost_keys: list[tuple[Key, int, str, str]] = field(default_factory=list)  # key, round, fault, why

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and not any(figures.lost for figures in self.table.values())


def soak(folder: Path, rounds: int, duration_s: float, seed: int, autosave_s: int,
         kinds: tuple[str, ...] = FAULTS, settle_s: float = 15) -> SoakResult:
    rng = random.Random(seed)
    recording = write_recording(folder / "soak.mcap")
    reference = reference_keys(folder, recording, autosave_s, settle_s)
    fuzz_inputs = pool(seed, 500, frozenset({"tiny_rate", "huge"}))
    result = SoakResult()
    started = time.monotonic()
    expected: set[Key] = set()
    round_faults: dict[int, str] = {}
    with state_directory(folder) as (state, mounted), rig(folder / "soak", state, autosave_s) as running:
        result.disk_full_available = mounted
        result.rss_mb_before = running.agent.rss_mb()
        faults: dict[str, Callable[[], None]] = {
            "agent_kill": lambda: agent_kill(running, rng), "broker_kill": lambda: broker_kill(running, rng),
            "broker_freeze": lambda: broker_freeze(running, rng),
            "disk_full": lambda: disk_full(running, rng, mounted),
            "fuzz_burst": lambda: fuzz_burst(running, rng, fuzz_inputs)}
        while result.rounds < rounds and time.monotonic() - started < duration_s:
            number = result.rounds + 1  # round 0 is the reference's
            fault = rng.choice(kinds)
            messages = round_input(recording, number)
            publish_round(running, messages, faults[fault], rng.randrange(len(messages)))
            running.agent.restart_if_exited()
            expected |= {shift_key(key, number) for key in reference}
            result.rounds += 1
            result.faults[fault] += 1
            round_faults[number] = fault
        events = collect(running, expected, settle_s=settle_s, timeout_s=120 + 2 * autosave_s)
        running.agent.restart_if_exited()
        result.rss_mb_after = running.agent.rss_mb()
        result.crashes, result.exit_codes = len(running.agent.crash_codes), running.agent.crash_codes
        result.broker_save_errors = running.broker.log.read_text(errors="replace").count("Error saving")
        runs = received_by_run(running.agent)
    made = made_events(folder / "soak")
    result.table = compare(expected, events, runs, made)
    received = {event_key(event) for event in events}
    for key in expected - received:
        upstream = input_missing(key, runs)
        lost = result.lost_upstream_by_fault if upstream else result.lost_by_fault
        lost[round_faults[round_of(key)]] += 1
        why = "upstream" if upstream else "made, not delivered" if key in made else "never made"
        result.lost_keys.append((key, round_of(key), round_faults[round_of(key)], why))
    result.seconds = time.monotonic() - started
    return result


def render(result: SoakResult) -> str:
    lines = [f"rounds: {result.rounds} in {result.seconds:.0f} s; faults: {dict(result.faults)}"
             + ("" if result.disk_full_available else " (disk_full skipped: tmpfs needs root)"),
             *([f"WARNING: the broker failed to save its database {result.broker_save_errors} times: its SIGKILLs "
                "lost every session, not only what came since the last autosave"] if result.broker_save_errors else []),
             f"crashes: {result.crashes} {result.exit_codes or ''}; agent RSS before/after: "
             f"{result.rss_mb_before:.0f} / {result.rss_mb_after:.0f} MiB",
             f"events lost by the agent, by the fault of their round: {dict(result.lost_by_fault)}",
             f"events lost upstream (no agent run received the window's whole input), by fault: "
             f"{dict(result.lost_upstream_by_fault)}", "",
             "| topic | expected | lost by the agent | of which made, not delivered | lost upstream | duplicated "
             "| out of order | unexpected |", "|---|---|---|---|---|---|---|---|"]
    totals = TopicFigures()
    for figures in result.table.values():
        for name in NUMBERS:
            setattr(totals, name, getattr(totals, name) + getattr(figures, name))
    for topic, figures in [*sorted(result.table.items()), ("all", totals)]:
        lines.append(f"| {topic} | " + " | ".join(str(getattr(figures, name)) for name in NUMBERS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=float("inf"), help="stop starting rounds after this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--autosave-s", type=int, default=30, help="the broker's autosave_interval")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these faults (default: all)")
    parser.add_argument("--verbose", action="store_true", help="list every lost event with its round and fault")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (agent logs per run, broker "
                                                  "log, made-events.jsonl) to trace a loss")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-agent-soak-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        result = soak(folder, args.rounds, args.duration_s, args.seed, args.autosave_s,
                      tuple(args.fault or FAULTS))
    print(render(result))
    if args.verbose:
        for key, number, fault, why in sorted(result.lost_keys, key=lambda lost: (lost[1], lost[0])):
            print(f"lost: round {number} ({fault}) {key[0]} {key[3]}: {why}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

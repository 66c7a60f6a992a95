"""Benchmark: one Mosquitto carrying many agents' event streams upstream (docs/scaling.md).

    python -m tests.benchmarks broker_load      # 50 agents, 10 events/s each: 20 s, then 15 s with a broker restart
    python -m tests.benchmarks.bench_broker_load --agents 50 --rate 10 --seconds 20 --restart-seconds 15 \
        --restart-persistence periodic on_changes none

What runs, all on loopback and in this one process except the broker:

- a Mosquitto of its own on a free port (:class:`agent.testing.Broker`), persistent as deployed
  (``deploy/mosquitto/mosquitto.conf``: saved every 30 s; saved once when everyone has connected, as a
  broker that has run for a while has saved its sessions), or saving after every change, or not at all;
- ``agents`` simulated agents, each the agent's own :class:`agent.sinks.mqtt.MqttSink` (its durable
  SQLite outbox, its client id ``<device>-out``, its topics, QoS 1, its last will and retained
  status), fed real-shaped events (the envelope from :func:`agent.events.finalize`, bodies shaped
  like the demo's, a JPEG-sized attachment on each reject) at ``rate`` events per second each, in the
  demo agent's mix (:data:`MIX`); a symbols page's overlay JPEG (about 385 kB) is left out, which keeps
  the run light on memory and disk: it counts messages, not bandwidth;
- one upstream subscriber in place of the broker's Kafka bridge: QoS 1, a persistent session
  (``clean_start`` false, session expiry 1 h), subscribed to events, health, errors and images.

Measured: events handed to the sinks, acknowledged by the broker (they left the outboxes), received
upstream (unique by event id), duplicates, lost (handed over, not held by any outbox at the end, never
received), delivered events per second during the sending window, end-to-end latency (the event's
``detection_time`` to its arrival upstream, outbox time included) and the CPU used by this process
and by the broker. The restart run kills the broker (SIGKILL) mid-stream and starts it again on the
same port: the outboxes keep what is not acknowledged and publish again what was acknowledged within
``outbox.replay_window_s``, so that nothing is lost and duplicates (dropped by event id upstream) are
expected. A broker that saved nothing forgets the bridge's subscription too: what the agents publish
before the bridge has subscribed again matches no subscriber and is dropped (``bridge_sessions_lost``).

Timings on a shared machine are reported, not asserted (``tests/test_scaling_load.py`` asserts zero
loss on a small run).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.events import EventDraft, ModelRef, dumps, finalize, iso_time
from agent.logs import configure_logging
from agent.sinks import Outgoing, SinkEnv
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.tasks.vibration.events import Health
from agent.testing import RUN_AS_CALLER, Broker, free_port, stop_client, wait_until

PREFIX = "edge"
#: the broker's persistence: "periodic" as deployed (deploy/mosquitto/mosquitto.conf: saved every 30 s),
#: "on_changes" (saved after every change, agent.testing.Broker's persistent mode), "none" (nothing saved)
PERSISTENCE = {"periodic": "persistence true\npersistence_location {folder}/\nautosave_interval 30\n",
               "on_changes": "", "none": ""}
#: what a data platform's bridge takes from the broker: everything the agents publish but their status
UPSTREAM_TOPICS = [f"{PREFIX}/+/events/#", f"{PREFIX}/+/health/#", f"{PREFIX}/+/errors", f"{PREFIX}/+/images/#"]


# -- real-shaped events ------------------------------------------------------------------------------

def _quality(rng: random.Random, seq: int) -> tuple[EventDraft, bytes | None]:
    reject = rng.random() < 0.03  # a real line's 2-5 % rejects; each publishes a JPEG crop (2-4 kB in the demo)
    score = rng.uniform(0.96, 1.0) if reject else rng.uniform(0.0, 0.9)
    x, y = rng.randrange(0, 600), rng.randrange(0, 440)
    body = {"part_id": f"camera-00-P{seq:06d}", "decision": "reject" if reject else "accept", "threshold": 0.9593,
            "location": {"box": [x, y, x + 32, y + 16], "peak": [x + 20, y + 4], "peak_score": score},
            "tiles": 108, "frame": {"width": 640, "height": 480}, "station": "off", "classifier_score": score,
            "novelty": None, "cause": None}
    attachment = rng.randbytes(rng.randrange(2000, 4200)) if reject else None
    return EventDraft("part_inspected", "camera-00", time.time_ns(), "alarm" if reject else "info", score,
                      ModelRef("quality-tilenet", "1.1.0"), body, attachment), attachment


def _vibration(rng: random.Random, seq: int) -> tuple[EventDraft, bytes | None]:
    health = round(rng.uniform(60, 100), 1)
    body = Health(health=health, state="normal", windows=60, rejected=0, spikes_removed=0, shaft_hz=28.01,
                  score=round(rng.uniform(0.2, 1.5), 3), threshold=1.843)
    return body.draft(f"pump-{seq % 4:02d}", time.time_ns(), "info", health, ModelRef("mahalanobis", "builtin")), None


def _speakers(rng: random.Random, seq: int) -> tuple[EventDraft, bytes | None]:
    start = time.time_ns() - 5_000_000_000
    body = {"microphone": "mic-00", "cluster": seq % 3, "name": None, "start": iso_time(start),
            "end": iso_time(start + 4_770_000_000), "duration_s": 4.77, "confidence": 1.0, "overlap": False,
            "new_cluster": False}
    return EventDraft("speaker_turn", "mic-00", start, "info", 1.0, ModelRef("speakers-bilstm-pkld", "1.0.0"),
                      body), None


def _faces(rng: random.Random, seq: int) -> tuple[EventDraft, bytes | None]:
    body: dict[str, Any] = {"track_id": seq, "frames": 3, "at_track_end": False, "box": [157.2, 141.7, 203.9, 197.8],
                            "threshold": 0.5, "identity": "Ada", "similarity": round(rng.uniform(0.5, 0.9), 4)}
    return EventDraft("face_matched", "door-00", time.time_ns(), "info", body["similarity"],
                      ModelRef("faces-se-resnet-arcface", "0.1.0"), body), None


def _symbols(rng: random.Random, seq: int) -> tuple[EventDraft, bytes | None]:
    """A page as the demo's: about 850 symbols, each with its class, box and confidence (about 58 kB)."""
    classes = ["noteheadBlack"] * 12 + ["accidentalFlat", "accidentalNatural", "augmentationDot", "rest8th"]
    detections: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for _ in range(855):
        x, y = round(rng.uniform(0, 1460), 1), round(rng.uniform(0, 2180), 1)
        symbol = rng.choice(classes)
        counts[symbol] = counts.get(symbol, 0) + 1
        detections.append({"symbol": symbol, "box": [x, y, round(x + 13.2, 1), round(y + 11.1, 1)],
                           "confidence": round(rng.uniform(0.2, 1.0), 3)})
    body = {"page_id": f"pages-00-page{seq:05d}", "total": len(detections),
            "summary": f"{len(detections)} symbols", "counts": counts, "detections": detections, "truncated": False,
            "min_confidence": 0.2, "staff_space": 11.6, "tiles": 24, "page": {"width": 1476, "height": 2192}}
    return EventDraft("symbols_detected", "pages-00", time.time_ns(), "info", float(len(detections)),
                      ModelRef("symbols-dwd", "1.0.0"), body), None


#: (task, maker, weight): the demo agent's events per hour (docs/scaling.md, "Events per agent"): a camera
#: at 2 parts/s, four pumps' health each minute, a microphone's turns and cluster changes, a door camera's
#: face tracks, a page every 15 s (its overlay JPEG left out: see the docstring)
MIX = [("quality", _quality, 7200), ("vibration", _vibration, 240), ("speakers", _speakers, 2160),
       ("faces", _faces, 400), ("symbols", _symbols, 240)]


def _parse_time_ns(text: str) -> int:
    stamp = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = (stamp - datetime(1970, 1, 1)).total_seconds()
    return round(seconds * 1e6) * 1000


# -- the parts ---------------------------------------------------------------------------------------

class SimulatedAgent:
    """One agent's upstream half: its MQTT sink (outbox, client id, topics) and a seeded event maker."""

    def __init__(self, index: int, port: int, folder: Path, seed: int) -> None:
        self.device = f"line-{index:03d}"
        state = folder / self.device
        state.mkdir(parents=True)
        config = MqttSinkConfig.model_validate({"kind": "mqtt", "host": "127.0.0.1", "port": port,
                                                "topic_prefix": PREFIX})
        self.sink = MqttSink(config, SinkEnv(self.device, state))
        self.rng = random.Random(seed * 1000 + index)
        self.seq = itertools.count()
        weights = [weight for _, _, weight in MIX]
        self.choose = lambda: self.rng.choices(MIX, weights)[0]
        self.sent: list[str] = []

    def emit(self) -> int:
        """Make one event and hand it to the sink, as the pipeline does; returns its size in bytes."""
        task, maker, _ = self.choose()
        draft, attachment = maker(self.rng, next(self.seq))
        event = finalize(draft, self.device, task)
        payload = dumps(event)
        self.sink.send(Outgoing(event, payload, attachment))
        self.sent.append(event["event_id"])
        return len(payload) + (len(attachment) if attachment else 0)


@dataclass
class Upstream:
    """The data platform's bridge: one QoS 1 subscriber with a persistent session; arrivals kept raw."""

    port: int
    arrivals: list[tuple[float, str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.connects: list[tuple[float, bool]] = []  # when the bridge connected, and whether its session was there
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bridge-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("the upstream subscriber got no SUBACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        present = bool(getattr(flags, "session_present", False))
        self.connects.append((time.time(), present))
        if not present:
            client.subscribe([(topic, 1) for topic in UPSTREAM_TOPICS])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.arrivals.append((time.time(), message.topic, bytes(message.payload)))

    def close(self) -> None:
        stop_client(self.client)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- one run -----------------------------------------------------------------------------------------

def load_run(agents: int = 50, rate: float = 10.0, seconds: float = 20.0, restart_at: float | None = None,
             down_s: float = 2.0, drain_s: float = 30.0, seed: int = 0, persistence: str = "periodic",
             folder: Path | None = None) -> dict[str, float]:
    """``agents`` agents publishing ``rate`` events/s each for ``seconds`` through one broker; with
    ``restart_at``, the broker is killed that many seconds in and started again ``down_s`` later. The
    broker's and the outboxes' files go in ``folder`` (default: a temporary folder, removed after)."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="broker-load-") as temporary:
            return load_run(agents, rate, seconds, restart_at, down_s, drain_s, seed, persistence, Path(temporary))
    broker = Broker(folder, free_port(), persistent=persistence == "on_changes",
                    extra_config=PERSISTENCE[persistence].format(folder=folder) + RUN_AS_CALLER).start()
    assert broker.process is not None
    upstream = Upstream(broker.port)
    fleet: list[SimulatedAgent] = []
    try:
        fleet = [SimulatedAgent(index, broker.port, folder, seed) for index in range(agents)]
        wait_until(lambda: all(agent.sink.connected.is_set() for agent in fleet), 20, 0.05,
                   "not every agent connected")
        if persistence == "periodic":
            # a broker that has run for a while has saved the bridge's and the agents' sessions: SIGUSR1 makes
            # Mosquitto save now; what it acknowledges from here on is only in memory until the next autosave
            broker.process.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        own_cpu, broker_cpu = _cpu_s(os.getpid()), _cpu_s(broker.process.pid)
        sent_bytes, restarter, killed_cpu = 0, None, [0.0]

        def restart() -> None:
            assert broker.process is not None
            killed_cpu[0] = _cpu_s(broker.process.pid) - broker_cpu
            broker.kill()
            time.sleep(down_s)
            broker.start()
        start = time.monotonic()
        # one clock for every agent: event k of agent i is due at (k + i / agents) / rate s from the start
        due = [index / agents / rate for index in range(agents)]
        while (now := time.monotonic() - start) < seconds:
            if restart_at is not None and restarter is None and now >= restart_at:
                restarter = threading.Thread(target=restart, daemon=True)  # the agents go on making events
                restarter.start()
            for index, agent in enumerate(fleet):
                while due[index] <= now:
                    sent_bytes += agent.emit()
                    due[index] += 1 / rate
            time.sleep(0.01)
        window = time.monotonic() - start
        window_end = time.time()
        sent = {event_id for agent in fleet for event_id in agent.sent}
        sent_count = sum(len(agent.sent) for agent in fleet)

        ids: set[str] = set()
        parsed = [0]

        def received_all() -> bool:
            arrivals, parsed[0] = upstream.arrivals[parsed[0]:], len(upstream.arrivals)
            ids.update(json.loads(payload)["event_id"] for _, topic, payload in arrivals if "/images/" not in topic)
            return sent <= ids and all(agent.sink.outbox.pending() == 0 for agent in fleet)
        with contextlib.suppress(TimeoutError):  # what did not arrive is counted below
            wait_until(received_all, drain_s, 0.25)
        time.sleep(0.5)  # late duplicates
        drained_s = time.monotonic() - start - window
        own_cpu = _cpu_s(os.getpid()) - own_cpu
        if restarter is not None:
            restarter.join()
            broker_cpu = 0.0  # the new process's CPU is counted from its start
        broker_cpu = _cpu_s(broker.process.pid) - broker_cpu + killed_cpu[0]
        pending = sum(agent.sink.outbox.pending() for agent in fleet)
        acknowledged = sum(agent.sink.outbox.counters.delivered for agent in fleet)
        replayed = sum(agent.sink.outbox.counters.replayed for agent in fleet)
    finally:
        for agent in fleet:
            agent.sink.close()
        upstream.close()
        broker.stop()

    events = [(at, json.loads(payload)) for at, topic, payload in upstream.arrivals if "/images/" not in topic]
    images = len({topic for _, topic, _ in upstream.arrivals if "/images/" in topic})  # one per event id
    first: dict[str, tuple[float, dict[str, Any]]] = {}
    for at, event in events:
        first.setdefault(event["event_id"], (at, event))
    latencies = [at - _parse_time_ns(event["detection_time"]) / 1e9 for at, event in first.values()]
    in_window = sum(1 for at, _ in first.values() if at <= window_end)
    # the busiest second upstream, duplicates and images included: after a restart, the backlog's catch-up
    per_second: dict[int, int] = {}
    for at, _, _ in upstream.arrivals:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    lost = len(sent - set(first)) if pending == 0 else len(sent - set(first)) - pending
    sessions_lost = sum(1 for _, present in upstream.connects[1:] if not present)
    return {
        "agents": agents, "rate_per_agent": rate, "window_s": round(window, 1),
        "sent": sent_count, "sent_mb": round(sent_bytes / 2**20, 1), "acknowledged_messages": acknowledged,
        "received_unique": len(first), "duplicates": len(events) - len(first), "images": images,
        "lost": max(lost, 0), "held_in_outboxes": pending, "replayed": replayed,
        "bridge_reconnects": len(upstream.connects) - 1, "bridge_sessions_lost": sessions_lost,
        "delivered_per_s": round(in_window / window, 1), "peak_messages_per_s": max(per_second.values(), default=0),
        "drain_s": round(drained_s, 1),
        "latency_p50_ms": round(_percentile(latencies, 0.50) * 1e3, 1),
        "latency_p95_ms": round(_percentile(latencies, 0.95) * 1e3, 1),
        "latency_p99_ms": round(_percentile(latencies, 0.99) * 1e3, 1),
        "latency_max_ms": round(max(latencies, default=float("nan")) * 1e3, 1),
        "cpu_agents_and_bridge_pct": round(own_cpu / (window + drained_s) * 100, 1),
        "cpu_broker_pct": round(broker_cpu / (window + drained_s) * 100, 1),
    }


def print_table(results: dict[str, dict[str, float]]) -> None:
    names = list(results)
    keys = list(next(iter(results.values())))
    print(f"{'':28s}" + "".join(f"{name:>16s}" for name in names))
    for key in keys:
        print(f"{key:28s}" + "".join(f"{results[name][key]!s:>16s}" for name in names), flush=True)


def run(agents: int = 50, rate: float = 10.0, seconds: float = 20.0, restart_seconds: float = 15.0,
        restart_persistence: tuple[str, ...] = ("periodic",)) -> dict[str, Any]:
    configure_logging("error")
    # 50 agents each say "connection refused" while the broker is down on purpose: keep the table readable
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    results = {}
    if seconds > 0:
        results["steady"] = load_run(agents, rate, seconds)
    if restart_seconds > 0:
        for persistence in restart_persistence:
            name = "restart" if persistence == "periodic" else f"restart_{persistence}"
            name += f"_{sum(key.startswith(name) for key in results) + 1}" if name in results else ""
            results[name] = load_run(agents, rate, restart_seconds, restart_at=restart_seconds / 3,
                                     persistence=persistence)
    print_table(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second per agent")
    parser.add_argument("--seconds", type=float, default=20.0, help="sending window of the steady run (0: none)")
    parser.add_argument("--restart-seconds", type=float, default=15.0,
                        help="sending window of the run with a broker restart a third in (0: no such run)")
    parser.add_argument("--restart-persistence", nargs="+", choices=sorted(PERSISTENCE), default=["periodic"],
                        help="the broker's persistence in the restart run(s): periodic (as deployed, every 30 s), "
                             "on_changes (after every change), none (the broker forgets every session)")
    args = parser.parse_args()
    print(json.dumps(run(args.agents, args.rate, args.seconds, args.restart_seconds,
                         tuple(args.restart_persistence)), indent=1))


if __name__ == "__main__":
    main()

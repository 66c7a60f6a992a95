"""Input acknowledged only after use: in-order MQTT acks, windows releasing their chunks, SIGKILL rounds."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import structlog

from agent.events import EventDraft, ModelRef
from agent.pipeline import Dispatcher, TaskWorker
from agent.stats import Stats
from agent.tasks.base import Task, TaskConfig, TaskContext
from agent.testing import stop_client, wait_until
from agent.windowing import Window, Windower
from models.runtime import load_model
from sensors import topics
from sensors.mqtt import connect_properties
from sensors.sources.mqtt import InOrderAcks
from sensors.wire import Kind, SensorMessage, encode
from tests.conftest import Broker, agent_config, write_energy_model
from tests.test_daemon import Daemon, NotifySocket
from tests.test_delivery import crash_prone_broker
from tests.test_faults import record_figure

SIGKILL_ROUNDS = int(os.environ.get("EDGE_AGENT_INPUT_KILL_ROUNDS", "3"))


class TestInOrderAcks:
    def test_acks_leave_in_order_of_receipt(self) -> None:
        """A message done early waits for every earlier one; then all go, oldest first."""
        sent: list[int] = []
        acks = InOrderAcks(lambda mid, qos: sent.append(mid), timeout_s=60)
        first, second, third = (acks.add(mid, 1) for mid in (7, 8, 9))
        third()
        assert sent == []
        first()
        assert sent == [7]
        second()
        assert sent == [7, 8, 9] and len(acks) == 0

    def test_a_stuck_message_is_acknowledged_after_the_timeout(self) -> None:
        """A message never done blocks the ones behind it only until the timeout, and is counted."""
        sent: list[int] = []
        acks = InOrderAcks(lambda mid, qos: sent.append(mid), timeout_s=0.05)
        acks.add(1, 1)
        acks.add(2, 1)()
        assert sent == []
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:
            acks.release()
            time.sleep(0.01)
        assert sent == [1, 2] and acks.timed_out == 1

    def test_a_reconnect_forgets_the_old_connections_messages(self) -> None:
        """After a reset, a late 'done' of an old message sends nothing (its id belongs to the old connection)."""
        sent: list[int] = []
        acks = InOrderAcks(lambda mid, qos: sent.append(mid), timeout_s=60)
        old = acks.add(1, 1)
        acks.reset()
        old()
        assert sent == []


class TestDispatcherAcks:
    def test_input_that_cannot_be_used_is_acknowledged_at_once(self) -> None:
        """Bytes that fail to decode, and a valid message no task wants, are done with: acknowledged."""
        acked: list[str] = []
        dispatcher = Dispatcher(Stats(), 1 << 20, lambda *args: None)
        dispatcher.submit(b"not a wire message", lambda: acked.append("junk"))
        dispatcher.submit(encode(frame(0)), lambda: acked.append("unwanted"))
        assert acked == ["junk", "unwanted"]


def chunk(seq: int, acked: list[int], samples: int = 250) -> SensorMessage:
    data = np.ones((samples, 1), np.float32)
    return SensorMessage("s1", Kind.VIBRATION, seq, 10**18 + seq * samples * 10**6, data, 1000.0,
                         ack=lambda: acked.append(seq))


class TestWindowAcks:
    def test_a_chunk_is_acknowledged_once_every_window_holding_it_was_cut(self) -> None:
        """1 s windows every 0.5 s from 0.25 s chunks: a chunk is released when the buffer has moved past it."""
        acked: list[int] = []
        windower = Windower(1.0, 0.5)
        for seq in range(4):
            windower.feed(chunk(seq, acked))
            windower.acknowledge()
        assert acked == [0, 1]  # the first window [0, 1 s) was cut; chunks 2 and 3 wait for the next one
        for seq in range(4, 6):
            windower.feed(chunk(seq, acked))
            windower.acknowledge()
        assert acked == [0, 1, 2, 3]

    def test_a_break_releases_the_discarded_partial_window(self) -> None:
        """Chunks thrown away by a sequence gap are done with (the gap is counted); the new ones wait. (The new chunk
        is not held for reordering here, so the gap is declared at once; with reordering it would first wait.)"""
        acked: list[int] = []
        windower = Windower(1.0, 1.0, reorder_chunks=0)
        windower.feed(chunk(0, acked))
        windower.feed(chunk(1, acked))
        windower.acknowledge()
        assert acked == []
        windower.feed(chunk(8, acked))  # on the window grid
        windower.acknowledge()
        assert acked == [0, 1]

    def test_chunks_before_the_grid_are_done_with_at_once(self) -> None:
        """A stream picked up mid-window (here at chunk 5 of 4-chunk windows) skips to the next window start
        (chunk 8): chunks 5-7 belong to no window this run will cut, so they are released at once."""
        acked: list[int] = []
        windower = Windower(1.0, 1.0)
        for seq in range(5, 12):
            windows, _ = windower.feed(chunk(seq, acked))
            windower.acknowledge()
            assert [w.start_ns for w in windows] == ([10**18 + 8 * 250 * 10**6] if seq == 11 else [])
        assert acked == [5, 6, 7, 8, 9, 10, 11]


    def test_input_delivered_again_from_further_back_does_not_lose_the_partial_window(self) -> None:
        """A broker restored from an older save sends chunks 0-2 again (used long ago) while chunks 4-5 wait for
        chunks 6-7: the partial window is kept aside and continues when the stream comes back to chunk 6, so
        window [4, 8) is cut (nobody would send chunks 4-5 again); the repeated chunks are acknowledged then."""
        acked: list[int] = []
        windower = Windower(1.0, 1.0)
        starts = []
        for seq in (0, 1, 2, 3, 4, 5, 0, 1, 2, 6, 7):
            windows, _ = windower.feed(chunk(seq, acked))
            windower.acknowledge()
            starts += [w.start_ns for w in windows]
        assert starts == [10**18, 10**18 + 4 * 250 * 10**6]
        assert acked == [0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7] and windower.resumed == 1

    def test_a_publisher_restart_still_restarts_the_window(self) -> None:
        """A step back in sequence number whose time goes on (the sensor restarted its numbering) is a new stream:
        the partial window is dropped and acknowledged at once, as for a gap."""
        acked: list[int] = []
        windower = Windower(1.0, 1.0)
        for seq in range(6):
            windower.feed(chunk(seq, acked))
            windower.acknowledge()
        restarted = SensorMessage("s1", Kind.VIBRATION, 0, 10**18 + 6 * 250 * 10**6, np.ones((250, 1), np.float32),
                                  1000.0, ack=lambda: acked.append(-1))
        _, stream_break = windower.feed(restarted)
        windower.acknowledge()
        assert stream_break is not None and acked == [0, 1, 2, 3, 4, 5] and windower.parked is None

    def test_a_dropped_windower_releases_its_partial_window_at_once(self, tmp_path: Path) -> None:
        """A reload with other window settings drops the windowers: their held chunks are acknowledged then,
        not after the source's ack timeout."""
        class Quiet(Task):
            name: ClassVar[str] = "quiet"
            kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.VIBRATION})
            config_type: ClassVar[type[TaskConfig]] = TaskConfig

            def process(self, item: SensorMessage | Window) -> list[EventDraft]:
                return []

            def models(self) -> list[ModelRef]:
                return []

        context = TaskContext("edge-1", tmp_path, load_model, structlog.get_logger())
        acked: list[int] = []
        worker = TaskWorker(Quiet(TaskConfig(), context), Stats(), lambda *a: None, lambda *a, **k: None)
        try:
            for seq in range(2):
                worker.offer(chunk(seq, acked))
            wait_until(lambda: worker.windowers.get("s1") is not None and len(worker.queue) == 0)
            assert acked == []  # half a window: held
            worker.swap(Quiet(TaskConfig(window_s=2.0, hop_s=2.0), context))
            assert acked == [0, 1]
        finally:
            worker.drain(time.monotonic() + 5)

    def test_chunks_held_behind_a_gap_that_never_fills_go_on_at_the_next_tick(self, tmp_path: Path) -> None:
        """Chunks 5-11 wait for chunk 4, which never comes and nothing follows: the worker's tick declares the gap
        once they waited the reorder timeout, window [8, 12) is cut and every chunk is acknowledged."""
        class Starts(Task):
            name: ClassVar[str] = "starts"
            kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.VIBRATION})
            config_type: ClassVar[type[TaskConfig]] = TaskConfig
            seen: ClassVar[list[int]] = []

            def process(self, item: SensorMessage | Window) -> list[EventDraft]:
                assert isinstance(item, Window)
                self.seen.append(item.start_ns)
                return []

            def models(self) -> list[ModelRef]:
                return []

        context = TaskContext("edge-1", tmp_path, load_model, structlog.get_logger())
        acked: list[int] = []
        worker = TaskWorker(Starts(TaskConfig(), context), Stats(), lambda *a: None, lambda *a, **k: None)
        try:
            worker.offer(chunk(0, acked))
            wait_until(lambda: worker.windowers.get("s1") is not None)
            worker.windowers["s1"].reorder.timeout_s = 0.2  # type: ignore[union-attr]
            for seq in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11):
                worker.offer(chunk(seq, acked))
            wait_until(lambda: len(acked) == 11, 10, 0.05, f"acknowledged: {acked}")
            assert Starts.seen == [10**18, 10**18 + 8 * 250 * 10**6]
        finally:
            worker.drain(time.monotonic() + 5)

BASE_NS = 1_700_000_000_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CHUNKS_PER_WINDOW = 4  # 250-sample chunks at 1 kHz, 1 s windows


class Counting(Task):
    """Frames, a few milliseconds each: a task that a burst of input outruns for a moment."""

    name: ClassVar[str] = "counting"
    kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.FRAME})
    config_type: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        self.seen: list[int] = []

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        time.sleep(0.003)
        assert isinstance(item, SensorMessage)
        self.seen.append(item.seq)
        return []

    def models(self) -> list[ModelRef]:
        return []


class TestBurstOfAcknowledgedInput:
    @pytest.mark.parametrize("acknowledged", [True, False])
    def test_a_burst_waits_for_room_when_the_broker_keeps_it(self, tmp_path: Path, acknowledged: bool) -> None:
        """A broker delivers its backlog at a reconnect: 60 frames at once into a queue of 4.  Input with an ack
        (the broker keeps it until then) waits for room and every frame is used; input without one (QoS 0,
        ZeroMQ) is shed by the overload policy as before, oldest first."""
        context = TaskContext("edge-1", tmp_path, load_model, structlog.get_logger())
        task = Counting(TaskConfig(queue_size=4), context)
        stats = Stats()
        worker = TaskWorker(task, stats, lambda *a: None, lambda *a, **k: None)
        dispatcher = Dispatcher(stats, 1 << 20, lambda *a, **k: None)
        dispatcher.workers.append(worker)
        acked: list[int] = []
        try:
            for seq in range(60):
                raw = encode(SensorMessage("cam-1", Kind.FRAME, seq, BASE_NS + seq, np.zeros((4, 4), np.uint8)))
                dispatcher.submit(raw, functools.partial(acked.append, seq) if acknowledged else None)
        finally:
            assert worker.drain(time.monotonic() + 30) == 0
        dropped = stats.snapshot()["sensors"]["cam-1"]["dropped"]
        if acknowledged:
            assert task.seen == list(range(60)) and dropped == 0 and sorted(acked) == list(range(60))
        else:
            assert dropped > 0 and len(task.seen) == 60 - dropped and task.seen[-1] == 59


def frame(seq: int) -> SensorMessage:
    """A white raw frame: the probe's energy is 1.0, above its threshold, so every frame gives one event."""
    return SensorMessage("cam-1", Kind.FRAME, seq, BASE_NS + seq * 10**6, np.full((8, 8), 255, np.uint8))


def used_input(path: Path) -> tuple[set[int], set[int]]:
    """The frames, and the vibration chunks, that became part of an event (a window holds four chunks)."""
    frames: set[int] = set()
    chunks: set[int] = set()
    if not path.exists():
        return frames, chunks
    for line in path.read_text().splitlines():
        if not line.endswith("}"):
            continue
        event = json.loads(line)
        if event["type"] != "energy_high":
            continue
        when = datetime.fromisoformat(event["source_time"].replace("Z", "+00:00"))
        offset_us = round((when - EPOCH).total_seconds() * 1e6) - BASE_NS // 1000
        if event["sensor"] == "cam-1":
            frames.add(offset_us // 1000)
        else:
            first = offset_us // 10**6
            chunks.update(range(first, first + CHUNKS_PER_WINDOW))
    return frames, chunks


def open_session(port: int, client_id: str) -> None:
    """Create the agent's persistent session and subscription, as an earlier run of the agent would have."""
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=connect_properties(3600))
    client.loop_start()
    client.subscribe(topics.sensor_subscription("edge"), qos=1)
    try:
        assert subscribed.wait(10), "no SUBACK"
    finally:
        stop_client(client)


class TestAgentKilled:
    def test_input_in_flight_when_the_agent_is_killed_still_becomes_events(self, tmp_path: Path,
                                                                           broker: Broker) -> None:
        """A publisher sends QoS 1 frames and vibration chunks to the agent's persistent session; the agent is
        SIGKILLed at random moments with input queued or in half-filled windows; after restarts every frame
        and every chunk of a complete window became part of an event (duplicates allowed)."""
        model = write_energy_model(tmp_path / "model")
        events = tmp_path / "events.jsonl"
        config = agent_config(tmp_path / "state", model,
                              [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port, "client_id": "acks-in"}],
                              [{"kind": "jsonl", "path": str(events)}],
                              probe={"delay_s": 0.02, "threshold": 0.5, "queue_size": 500})
        open_session(broker.port, "acks-in")  # the agent's persistent session exists before any input is sent
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        rng = random.Random(3)
        seq = 0

        def publish(message: SensorMessage) -> None:
            topic = topics.sensor_topic("edge", message.kind, message.sensor_id)
            publisher.publish(topic, encode(message), qos=1).wait_for_publish(5)

        def all_used() -> bool:
            frames, chunks = used_input(events)
            return frames >= set(range(seq)) and chunks >= set(range(seq))

        try:
            for round_number in range(SIGKILL_ROUNDS + 1):
                notify = NotifySocket(tmp_path / f"notify-{round_number}.sock")
                daemon = Daemon(tmp_path, config, notify)
                assert notify.wait_for("READY=1", 30), daemon.log()
                if round_number == SIGKILL_ROUNDS:  # the last start catches up and stops cleanly
                    deadline = time.monotonic() + 30
                    while not all_used() and time.monotonic() < deadline:
                        time.sleep(0.1)
                    daemon.stop()
                    notify.close()
                    break
                for _ in range(rng.randint(8, 15) * CHUNKS_PER_WINDOW):  # whole windows over all rounds
                    publish(frame(seq))
                    publish(SensorMessage("vib-1", Kind.VIBRATION, seq, BASE_NS + seq * 10**9,
                                          np.full((250, 1), 2.0, np.float32), 1000.0))
                    seq += 1
                time.sleep(rng.uniform(0.1, 0.4))
                daemon.process.send_signal(signal.SIGKILL)
                daemon.process.wait(10)
                notify.close()
        finally:
            stop_client(publisher)
        frames, chunks = used_input(events)
        lost_frames, lost_chunks = set(range(seq)) - frames, set(range(seq)) - chunks
        record_figure("input_acks_agent_sigkill", {"rounds": SIGKILL_ROUNDS, "frames": seq, "chunks": seq,
                                                   "frames_without_event": len(lost_frames),
                                                   "chunks_without_event": len(lost_chunks)})
        assert seq and not lost_frames, f"{len(lost_frames)} of {seq} frames never became events"
        assert not lost_chunks, f"{len(lost_chunks)} of {seq} vibration chunks never became part of an event"


class TestBrokerRestoredFromAnOlderSave:
    def test_a_partial_window_survives_input_the_restored_broker_delivers_again(self, tmp_path: Path) -> None:
        """The broker saves while chunks 0-3 wait for the agent; the agent uses them, then holds chunks 4-5 (half a
        window) when the broker is SIGKILLed. The restored broker sends 0-3 again and knows nothing of 4-5; with
        chunks 6-7 the window [4, 8) must still become an event."""
        broker = crash_prone_broker(tmp_path)  # saves only when told (SIGUSR1 here), as between two autosaves
        model = write_energy_model(tmp_path / "model")
        events = tmp_path / "events.jsonl"
        config = agent_config(tmp_path / "state", model,
                              [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port, "client_id": "restore-in",
                                "keepalive_s": 2}],
                              [{"kind": "jsonl", "path": str(events)}], probe={"threshold": 0.5})
        config["log"]["level"] = "debug"  # "sensor message" lines say what the agent received
        open_session(broker.port, "restore-in")
        daemon: Daemon | None = None
        notify = NotifySocket(tmp_path / "notify.sock")

        def publish(seqs: range) -> None:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            try:
                for seq in seqs:
                    message = SensorMessage("vib-1", Kind.VIBRATION, seq, BASE_NS + seq * 10**9,
                                            np.full((250, 1), 2.0, np.float32), 1000.0)
                    topic = topics.sensor_topic("edge", message.kind, message.sensor_id)
                    client.publish(topic, encode(message), qos=1).wait_for_publish(5)
            finally:
                stop_client(client)

        def saves() -> int:
            return broker.log.read_text(errors="replace").count("Saving in-memory database")

        try:
            publish(range(4))  # queued in the agent's session, and saved so
            before = saves()
            assert broker.process is not None
            broker.process.send_signal(signal.SIGUSR1)
            wait_until(lambda: saves() > before and (tmp_path / "mosquitto.db").exists(), 10, 0.05,
                       "the broker did not save")
            daemon = Daemon(tmp_path, config, notify)
            assert notify.wait_for("READY=1", 30), daemon.log()
            wait_until(lambda: used_input(events)[1] >= set(range(4)), 30, 0.05, "window [0, 4) never made")
            publish(range(4, 6))
            wait_until(lambda: any(e.get("seq") == 5 for e in daemon.log_events("sensor message")), 30, 0.05,
                       "chunk 5 never reached the agent")
            broker.kill()
            broker.start()  # restored from the save: 0-3 queued for the agent again, 4-5 unknown
            publish(range(6, 8))
            wait_until(lambda: used_input(events)[1] >= set(range(8)), 30, 0.05,
                       f"window [4, 8) never made:\n{daemon.log()[-3000:]}")
        finally:
            if daemon is not None:
                daemon.stop()
            notify.close()
            broker.stop()

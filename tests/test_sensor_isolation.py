"""A bad sensor never takes the agent down: quarantine, fair queues, bounded per-sensor state (issue 9)."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zlib import crc32

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import structlog
import yaml
import zmq

from agent import testing
from agent.config import parse_config
from agent.daemon import Agent
from agent.events import EventDraft
from agent.pipeline import BoundedQueue, Dispatcher, RejectionReporter
from agent.quarantine import Quarantine, QuarantineConfig
from agent.sinks import SinkEnv
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.stats import Stats
from agent.testing import stop_client
from agent.windowing import Windower
from sensors.sources import SourceEnv
from sensors.sources.mqtt import MqttSource, MqttSourceConfig
from sensors.wire import Encoding, Kind, SensorMessage, encode
from tests.conftest import Broker, ProbeTask, agent_config, free_port, vibration_chunk, write_energy_model
from tests.test_vibration_task import make_task, run, windows

JPEG_JUNK = b"\xff\xd8\xff" + b"\0" * 64  # passes the wire's signature check, the probe task rejects it


# a running agent's first events can take a while on a busy machine
wait_until = functools.partial(testing.wait_until, timeout=15.0)


class Running:
    """An agent on a ZeroMQ PULL source writing events to JSONL, with a PUSH socket to feed it."""

    def __init__(self, tmp_path: Path, **extra: Any) -> None:
        inbound = free_port()
        self.events_path = tmp_path / "events.jsonl"
        config = agent_config(tmp_path / "state", write_energy_model(tmp_path / "model"),
                              [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{inbound}"}],
                              [{"kind": "jsonl", "path": str(self.events_path)}], **extra)
        self.config_path = tmp_path / "agent.yaml"  # for reloads
        self.config_path.write_text(yaml.safe_dump(config))
        self.agent = Agent(parse_config(config), self.config_path)
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()
        self.push = zmq.Context.instance().socket(zmq.PUSH)
        self.push.connect(f"tcp://127.0.0.1:{inbound}")

    def send(self, message: SensorMessage) -> None:
        self.push.send(encode(message))

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.push.close(0)
        self.agent.stop_requested.set()
        self.thread.join(20)


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    agent = Running(tmp_path, **getattr(request, "param", {}))
    try:
        yield agent
    finally:
        agent.stop()


def raise_for_bad_sensor(original: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    def patched(self: Any, item: Any) -> Any:
        if item.sensor_id.startswith("bad"):
            raise error
        return original(self, item)

    return patched


class TestBadSensorNeverStopsTheAgent:
    @pytest.mark.parametrize("running", [{"probe": {"threshold": 0.0, "window_s": 0.1, "hop_s": 0.1}}],
                             indirect=True)
    @pytest.mark.parametrize("where", ["windowing", "task"])
    def test_failing_input_is_rejected_quarantined_and_the_others_go_on(
            self, running: Running, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
        """Input that makes windowing (the 5e-324 Hz overflow) or the task raise is rejected with its own time,
        the sensor is quarantined after 3 failures, no worker restarts, and another sensor keeps its events."""
        if where == "windowing":
            monkeypatch.setattr(Windower, "feed", raise_for_bad_sensor(Windower.feed, OverflowError("overflow")))
        else:
            monkeypatch.setattr(ProbeTask, "process", raise_for_bad_sensor(ProbeTask.process, ZeroDivisionError()))
        for seq in range(20):
            running.send(vibration_chunk("bad-1", seq, 0.5, samples=100))
            running.send(vibration_chunk("good-1", seq, 0.5, samples=100))
        assert wait_until(lambda: sum(e["sensor"] == "good-1" and e["type"] == "energy_high"
                                            for e in running.events()) >= 20)
        events = running.events()
        quarantined = [e for e in events if e["type"] == "sensor_quarantined"]
        assert [e["sensor"] for e in quarantined] == ["bad-1"] and quarantined[0]["body"]["failures"] == 3
        rejected = [e for e in events if e["type"] == "input_rejected" and e["sensor"] == "bad-1"]
        assert rejected and rejected[0]["body"]["seq"] == 0
        assert rejected[0]["source_time"] == "2023-11-14T22:13:20.000000Z"  # the chunk's own time
        stats = running.agent.stats.snapshot()
        assert stats["tasks"]["probe"]["restarts"] == 0 and running.agent.exit_code == 0
        assert stats["sensors"]["bad-1"]["quarantined"] == 17 and stats["sensors"]["bad-1"]["rejected"] == 3
        assert running.agent.quarantine.quarantined() == ["bad-1"]
        assert running.thread.is_alive()
        running.agent.reload_requested.set()  # SIGHUP: the operator may have fixed the sensor
        assert wait_until(lambda: running.agent.quarantine.quarantined() == [])

    def test_reload_lifts_a_quarantine(self) -> None:
        """Three failures within the window quarantine; a reload (lift_all) lifts it; the event says why."""
        emitted: list[EventDraft] = []
        quarantine = Quarantine(lambda task, draft: emitted.append(draft), QuarantineConfig(failures=3))
        assert not any(quarantine.failed("s", "boom", 5) for _ in range(2)) and not quarantine.blocked("s")
        assert quarantine.failed("s", "boom", 5) and quarantine.blocked("s")
        assert [(d.type, d.sensor, d.source_time_ns, d.body["reason"]) for d in emitted] == \
            [("sensor_quarantined", "s", 5, "boom")]
        quarantine.lift_all()
        assert not quarantine.blocked("s") and quarantine.quarantined() == []


class TestFairQueue:
    def test_a_flooding_sensor_only_loses_its_own_items(self) -> None:
        """With the queue full, the oldest item of the longest lane goes; lanes are served in turn."""
        queue = BoundedQueue(8)
        evicted, served = [], []
        for seq in range(100):  # a sends 10 items for each of b's, the consumer takes 2 in 10
            evicted.append(queue.put(SensorMessage("a", Kind.FRAME, seq, 1, b"")))
            if seq % 10 == 0:
                evicted.append(queue.put(SensorMessage("b", Kind.FRAME, seq, 1, b"")))
            if seq % 5 == 4:
                served.append(queue.get(0))
        assert {e.sensor_id for e in evicted if e is not None} == {"a"}
        assert sum(m is not None and m.sensor_id == "b" for m in served) == 10
        queue.put(SensorMessage("b", Kind.FRAME, 100, 1, b""))
        assert [m.sensor_id for m in (queue.get(0), queue.get(0), queue.get(0)) if m is not None] == ["a", "b", "a"]

    def test_many_new_ids_cannot_crowd_out_an_established_sensor(self) -> None:
        """Fake ids, each with a short lane, are evicted before an established sensor's longer lane; with the
        plain longest-lane rule the established sensor, whose lane is the longest, would lose every eviction."""
        for trusted, loser in ((lambda sensor: sensor == "real", "fake"), (lambda sensor: False, "real")):
            queue = BoundedQueue(8, trusted)
            for seq in range(4):
                queue.put(SensorMessage("real", Kind.FRAME, seq, 1, b""))
            evicted = [queue.put(SensorMessage(f"fake-{n}", Kind.FRAME, 0, 1, b"")) for n in range(4)]
            evicted.append(queue.put(SensorMessage("real", Kind.FRAME, 4, 1, b"")))
            assert [e.sensor_id[:4] for e in evicted if e is not None] == [loser], loser

    def test_an_established_flooding_sensor_still_only_loses_its_own_items(self) -> None:
        """Among established sensors the longest lane loses, as before: trust does not let a sensor flood."""
        queue = BoundedQueue(4, lambda sensor: True)
        evicted = [queue.put(SensorMessage("a", Kind.FRAME, seq, 1, b"")) for seq in range(6)]
        evicted.append(queue.put(SensorMessage("b", Kind.FRAME, 0, 1, b"")))
        assert {e.sensor_id for e in evicted if e is not None} == {"a"} and len(queue) == 4

    @pytest.mark.parametrize("running", [{"probe": {"threshold": 0.5, "queue_size": 16, "delay_s": 0.005}}],
                             indirect=True)
    def test_a_camera_flood_does_not_starve_another_camera(self, running: Running) -> None:
        """Camera A floods frames (625/s, three times what the task takes: the queue overflows) and a few bad
        ones; camera B sends 25 frames/s: every frame of B is processed, only A's frames are dropped."""
        bright = np.full((8, 8), 255, np.uint8)  # energy 1.0 > threshold: one event per frame
        dark = np.zeros((8, 8), np.uint8)  # energy 0: no event, but each costs the task its 5 ms
        started = time.monotonic()
        for seq in range(40):
            time.sleep(max(0.0, started + seq * 0.04 - time.monotonic()))  # pacing B, not waiting for anything
            for flood in range(25):
                junk = (JPEG_JUNK, Encoding.JPEG) if flood % 5 == 0 else (dark, Encoding.RAW)
                running.send(SensorMessage("cam-a", Kind.FRAME, seq * 25 + flood, 10**18, junk[0],
                                           encoding=junk[1]))
            running.send(SensorMessage("cam-b", Kind.FRAME, seq, 10**18 + seq, bright))
        assert wait_until(lambda: sum(e["sensor"] == "cam-b" for e in running.events()) >= 40), \
            running.agent.stats.snapshot()["sensors"]
        stats = running.agent.stats.snapshot()["sensors"]
        assert stats["cam-b"]["dropped"] == 0 and stats["cam-a"]["dropped"] > 0


class TestBoundedState:
    def make(self, max_sensors: int = 100) -> tuple[Dispatcher, Stats, list[EventDraft]]:
        stats, emitted = Stats(max_sensors), []
        reporter = RejectionReporter(lambda task, draft: emitted.append(draft), interval_s=60,
                                     max_sensors=max_sensors)
        return Dispatcher(stats, 1 << 20, reporter), stats, emitted

    def test_unknown_ids_are_bounded_and_counted(self) -> None:
        """6,471 unknown sensor ids: at most max_sensors entries, the rest evicted and counted; a small status."""
        dispatcher, stats, _ = self.make()
        for index in range(6471):
            dispatcher.submit(encode(vibration_chunk(f"junk-{index}", 0, 0.1, samples=10)))
        snapshot = stats.snapshot()
        assert len(stats.sensors) == 100 and snapshot["sensor_totals"]["evicted"] == 6371
        assert snapshot["sensor_totals"]["received"] == 100 and len(snapshot["sensors"]) == 20
        assert len(json.dumps(snapshot)) < 8000

    def test_nan_samples_are_counted_against_the_sensor_with_their_time(self) -> None:
        """A message with NaN samples is counted per sensor with the reason text; its report has its time and seq."""
        dispatcher, stats, emitted = self.make()
        message = vibration_chunk("nan-1", 7, 0.1, samples=10)
        raw = bytearray(encode(message))
        nan = np.float32("nan").tobytes()
        start = raw.index(message.samples.tobytes())
        raw[start:start + 4] = nan
        raw[-4:] = crc32(bytes(raw[:-4])).to_bytes(4, "little")
        dispatcher.submit(bytes(raw))
        assert stats.undecodable == 0 and stats.sensors["nan-1"].rejected == 1
        assert dict(stats.sensors["nan-1"].reasons) == {"samples contain NaN or Inf": 1}
        (draft,) = emitted
        assert draft.source_time_ns == message.timestamp_ns and draft.body["seq"] == 7

    def test_discarded_messages_are_acknowledged(self) -> None:
        """A message no task wants, or one from a quarantined sensor, is acknowledged at once."""
        dispatcher, _, _ = self.make()
        acks: list[str] = []
        for sensor in ("nobody-wants", "quarantined"):
            if sensor == "quarantined":
                for _ in range(3):
                    dispatcher.quarantine.failed(sensor, "boom", 1)
            message = vibration_chunk(sensor, 0, 0.1, samples=10)
            dispatcher.route(SensorMessage(message.sensor_id, message.kind, 0, 1, message.data, 1000.0,
                                           ack=lambda s=sensor: acks.append(s)))  # type: ignore[misc]
        assert acks == ["nobody-wants", "quarantined"]


class TestStatusAndStop:
    def test_last_will_carries_no_connect_time(self, tmp_path: Path, broker: Broker) -> None:
        """The offline status the broker publishes when the connection dies has no time: it would be the connect
        time (the will is stored at connect); it says the connection was lost instead."""
        statuses: list[dict[str, Any]] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_connect = lambda c, *_: c.subscribe("edge/line-1/status", qos=1)
        client.on_message = lambda c, u, m: statuses.append(json.loads(m.payload))
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        sink = MqttSink(MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=broker.port), SinkEnv("line-1", tmp_path))
        try:
            assert wait_until(lambda: any(s["state"] == "online" for s in statuses))
            connection = sink.client.socket()
            assert isinstance(connection, socket.socket)
            connection.shutdown(socket.SHUT_RDWR)  # the connection dies without a DISCONNECT
            assert wait_until(lambda: any(s["state"] == "offline" for s in statuses))
        finally:
            sink.close()
            stop_client(client)
        offline = next(s for s in statuses if s["state"] == "offline")
        assert offline == {"device": "line-1", "state": "offline", "reason": "connection lost"}

    def test_a_normal_stop_is_not_a_warning(self, broker: Broker) -> None:
        """Closing the MQTT source is logged as a plain disconnect, not 'disconnected; reconnecting'."""
        source = MqttSource(MqttSourceConfig(kind="mqtt", host="127.0.0.1", port=broker.port),
                            SourceEnv("line-1", zmq.Context.instance(), 1 << 20))
        source.start(lambda raw, ack=None: None)
        try:
            assert wait_until(source.connected.is_set)
        finally:
            with structlog.testing.capture_logs() as logs:
                source.close()
        assert [entry["log_level"] for entry in logs if "disconnected" in entry["event"]] == ["info"]


class TestForget:
    @pytest.mark.parametrize("running", [{"max_sensors": 2, "probe": {"threshold": 1e9}}], indirect=True)
    def test_the_least_recently_seen_sensor_is_forgotten_by_the_worker_and_task(
            self, running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
        """With max_sensors 2, a third sensor evicts the first from stats, windowers and the task's own state."""
        forgotten: list[str] = []
        monkeypatch.setattr(ProbeTask, "forget", lambda self, sensor: forgotten.append(sensor), raising=False)
        for sensor in ("s-1", "s-2", "s-3"):
            running.send(vibration_chunk(sensor, 0, 0.1, samples=100))
        assert wait_until(lambda: forgotten == ["s-1"])
        assert list(running.agent.workers["probe"].windowers) == ["s-2", "s-3"]
        assert list(running.agent.stats.sensors) == ["s-2", "s-3"] and running.agent.stats.sensors.evicted == 1

    def test_vibration_task_saves_and_drops_a_forgotten_machine(self, tmp_path: Path) -> None:
        """The vibration task drops a forgotten sensor's monitor after saving it, so it resumes if it returns."""
        task = make_task(tmp_path, scorer="mahalanobis")
        try:
            run(task, windows(None, duration_s=3.0))
            assert "pump-1" in task.machines
            task.forget("pump-1")
            assert "pump-1" not in task.machines and task.store.load("pump-1") is not None
        finally:
            task.close()


class TestOfflineOnlyForRealSensors:
    @pytest.mark.parametrize("running", [{"sensor_timeout_s": 0.5, "probe": {"threshold": 1e9}}], indirect=True)
    def test_a_once_healthy_sensor_goes_offline_and_a_junk_id_does_not(self, running: Running) -> None:
        """A sensor matched only by a wildcard that delivered 10 valid messages over the healthy span is reported
        offline when silent; an id that sent two messages is not."""
        started = time.monotonic()
        for seq in range(12):
            time.sleep(max(0.0, started + seq * 0.06 - time.monotonic()))  # pacing: 12 messages over 0.66 s
            running.send(vibration_chunk("pump-healthy", seq, 0.1, samples=100))
            if seq < 2:
                running.send(vibration_chunk("junk-id", seq, 0.1, samples=100))
        assert wait_until(lambda: any(e["type"] == "sensor_offline" for e in running.events()))
        # the junk id went silent first, so an offline event of its would have come no later than this one
        assert [(e["type"], e["sensor"]) for e in running.events()] == [("sensor_offline", "pump-healthy")]

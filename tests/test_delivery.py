"""Delivery when things break: a full disk (a real 2 MiB tmpfs) and a broker that crashes after acknowledging."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import zmq

from agent.events import EventDraft, dumps, finalize
from agent.outbox import Outbox
from agent.sinks import Outgoing, SinkEnv
from agent.sinks.mqtt import MqttSink, MqttSinkConfig
from agent.testing import Subscriber, wait_until
from sensors.wire import encode
from tests.conftest import Broker, agent_config, free_port, vibration_chunk, write_energy_model
from tests.test_daemon import Daemon, NotifySocket
from tests.test_faults import Collector, jsonl_ids, record_figure


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs; the suite runs as root in CI), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; removing it frees the space again."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError:
            pass
    return filler


def outgoing(index: int) -> Outgoing:
    event = finalize(EventDraft("energy_high", f"pump-{index % 3}", 1_700_000_000_000_000_000 + index,
                                "alarm", float(index)), "disk-test", "probe")
    return Outgoing(event, dumps(event))


def ids_of(received: list[tuple[str, bytes]]) -> set[str]:
    return {json.loads(payload)["event_id"] for _, payload in received}


class TestFullDisk:
    def test_events_that_could_not_be_written_are_published_and_storage_degraded_is_raised(
            self, small_disk: Path, broker: Broker) -> None:
        """With the outbox on a full disk and the broker up, every event still arrives; the sink says the
        storage is degraded (event and stats), and recovered once space is back."""
        reports: list[EventDraft] = []
        sink = MqttSink(MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=broker.port),
                        SinkEnv("disk-test", small_disk / "state", report=reports.append))
        with Subscriber(broker.port, "edge/disk-test/events/#") as subscriber:
            try:
                assert sink.connected.wait(10)
                filler = fill(small_disk)
                items = [outgoing(index) for index in range(40)]
                for item in items:
                    sink.send(item)
                wanted = {item.event["event_id"] for item in items}
                assert ids_of(subscriber.wait_for(len(items))) >= wanted
                assert wait_until(lambda: sink.outbox.pending() == 0)
                assert wait_until(lambda: any(d.type == "storage_degraded" for d in reports))
                assert sink.stats()["storage_degraded"] and sink.outbox.counters.write_failures > 0
                filler.unlink()
                sink.send(outgoing(99))  # a write that works again
                assert wait_until(lambda: any(d.type == "storage_recovered" for d in reports))
                assert not sink.stats()["storage_degraded"]
            finally:
                sink.close()
        degraded = next(d for d in reports if d.type == "storage_degraded")
        assert "full" in degraded.body["error"]

    def test_at_shutdown_what_lives_only_in_memory_is_logged_one_json_event_per_line(
            self, small_disk: Path) -> None:
        """No broker and no disk: at close, each event held only in memory is written to the log in full."""
        sink = MqttSink(MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=free_port(), keepalive_s=2),
                        SinkEnv("disk-test", small_disk / "state"))
        fill(small_disk)
        items = [outgoing(index) for index in range(5)]
        with structlog.testing.capture_logs() as logs:
            for item in items:
                sink.send(item)
            sink.close()
        logged = [entry["data"] for entry in logs if entry["event"] == "undelivered event"]
        assert [event["event_id"] for event in logged] == [item.event["event_id"] for item in items]
        assert logged[0] == items[0].event

    def test_an_acknowledgement_that_cannot_be_stored_neither_loses_nor_repeats(self, small_disk: Path) -> None:
        """A delete that fails on a full disk is remembered: the rows are not handed out again, even after a
        reconnect, and are deleted once space is back (so a restart does not publish them again)."""
        outbox = Outbox(small_disk / "o.sqlite")
        for index in range(20):
            outbox.put(f"e{index}", "t", b"{}", 0)
        first = outbox.take(10)
        filler = fill(small_disk)
        outbox.acknowledge([entry.row_id for entry in first])
        assert outbox.degraded is not None and outbox.pending() == 10
        outbox.new_epoch()
        assert [entry.event_id for entry in outbox.take(50)] == [f"e{index}" for index in range(10, 20)]
        filler.unlink()
        outbox.acknowledge([])
        outbox.take(1)  # any call retries the delete
        assert outbox.degraded is None
        outbox.close()
        reopened = Outbox(small_disk / "o.sqlite")
        assert reopened.pending() == 10
        reopened.close()


    def test_a_start_on_a_full_disk_keeps_the_outbox_in_memory_and_logs_what_is_left(self, small_disk: Path) -> None:
        """An outbox that cannot even open its database (a restart on a full disk) works from memory, says
        so, and writes what it could not deliver to the log at close."""
        Outbox(small_disk / "o.sqlite").close()
        fill(small_disk)
        outbox = Outbox(small_disk / "o.sqlite")
        assert outbox.volatile and outbox.degraded is not None
        for index in range(3):
            outbox.put(f"e{index}", "t", json.dumps({"index": index}).encode(), 0)
        delivered = outbox.take(1)
        outbox.acknowledge([delivered[0].row_id])
        assert outbox.degraded is not None  # writes to memory work, but storage has not recovered
        with structlog.testing.capture_logs() as logs:
            outbox.close()
        assert [entry["data"] for entry in logs if entry["event"] == "undelivered event"] == [
            {"index": 1}, {"index": 2}]


def crash_prone_broker(tmp_path: Path) -> Broker:
    """A broker that persists only on a clean stop (as with a long autosave_interval), so a SIGKILL loses
    what it acknowledged since; ``user root`` lets it write its database when the suite runs as root."""
    persistence = (f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 3600\n"
                   f"{'user root' if os.geteuid() == 0 else ''}\n")
    return Broker(tmp_path, free_port(), extra_config=persistence).start()


class TestBrokerCrash:
    def test_events_the_broker_acknowledged_then_lost_in_a_crash_are_published_again(self, tmp_path: Path) -> None:
        """The broker acknowledges events queued for an offline subscriber, then is SIGKILLed before saving:
        after it restarts, the sink publishes its replay window again and the subscriber gets every event."""
        broker = crash_prone_broker(tmp_path)
        collector = Collector(broker.port)  # subscribes in a persistent session...
        collector.close()
        broker.stop()  # ...that the broker saves on a clean stop
        broker.start()
        config = MqttSinkConfig(kind="mqtt", host="127.0.0.1", port=broker.port, keepalive_s=2)
        sink = MqttSink(config, SinkEnv("crash-test", tmp_path / "state"))
        items = [outgoing(index) for index in range(20)]
        try:
            assert sink.connected.wait(10)
            for item in items:
                sink.send(item)
            assert wait_until(lambda: sink.outbox.counters.delivered == len(items))
            broker.kill()  # acknowledged, queued for the collector, never saved
            assert wait_until(lambda: not sink.connected.is_set())
            broker.start()
            assert wait_until(lambda: sink.connected.is_set(), 30)
            assert wait_until(lambda: sink.outbox.pending() == 0)
            collector = Collector(broker.port)
            missing = collector.wait_for({item.event["event_id"] for item in items}, 10)
            collector.close()
        finally:
            sink.close()
            broker.stop()
        assert not missing, f"{len(missing)} of {len(items)} acknowledged events lost in the broker crash"
        assert sink.outbox.counters.replayed == len(items)


class TestDaemonOnAFullDisk:
    def test_nothing_is_lost_when_the_state_directory_is_full(self, tmp_path: Path, small_disk: Path,
                                                              broker: Broker) -> None:
        """The daemon's state directory fills up while events flow and the broker is up: every event arrives
        (or, at worst, is in the log), storage_degraded is published, and SIGTERM loses nothing."""
        model = write_energy_model(tmp_path / "model")
        inbound = free_port()
        events = tmp_path / "events.jsonl"  # the reference list of what was produced, on a disk with room
        config = agent_config(small_disk / "state", model, [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{inbound}"}],
                              [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port},
                               {"kind": "jsonl", "path": str(events)}], probe={"queue_size": 200})
        collector = Collector(broker.port)
        notify = NotifySocket(tmp_path / "notify.sock")
        daemon = Daemon(tmp_path, config, notify)
        sender = zmq.Context.instance().socket(zmq.PUSH)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            assert wait_until(lambda: bool(daemon.log_events("mqtt connected")), 10)
            fill(small_disk)
            sender.connect(f"tcp://127.0.0.1:{inbound}")
            for seq in range(80):
                sender.send(encode(vibration_chunk("pump-1", seq, 3.0)))
            assert wait_until(lambda: len(jsonl_ids(events)) >= 81, 30)  # 80 alarms and storage_degraded
            produced = set(jsonl_ids(events))
            collector.wait_for(produced, 15)
        finally:
            sender.close(0)
            daemon.stop()
            notify.close()
            collector.close()
        delivered = set(collector.ids())
        logged = {line["event_id"] for line in daemon.log_events("undelivered event")}
        lost = produced - delivered - logged
        record_figure("full_disk_daemon", {"events": len(produced), "delivered": len(produced & delivered),
                                           "only_logged": len(logged - delivered), "lost": len(lost)})
        assert not lost, f"{len(lost)} of {len(produced)} events lost"
        assert delivered >= produced
        assert any(event["type"] == "storage_degraded" for event in collector.events)

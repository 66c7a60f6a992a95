"""The daemon as systemd runs it: notify socket, watchdog, signals, reload, an absent broker."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from agent import testing
from agent.testing import NotifySocket, stop_client, subscriber, wait_until, zmq_socket
from sensors.wire import encode
from tests.conftest import Broker, agent_config, free_port, vibration_chunk, write_energy_model


class Daemon(testing.Daemon):
    """``edge-agent run`` in a subprocess with the probe task of tests/conftest.py."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], notify: NotifySocket) -> None:
        super().__init__(tmp_path, config, notify, plugins=["tests.conftest"])


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def zmq_config(tmp_path: Path, port: int, **extra: Any) -> dict[str, Any]:
    model = write_energy_model(tmp_path / "model")
    return agent_config(tmp_path / "state", model,
                        [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "socket": "pull"}],
                        [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}], **extra)


def push(port: int, sensor: str, seqs: range, amplitude: float) -> None:
    """Send chunks to the agent's PULL socket; raises zmq.Again if it does not take them within 10 s."""
    with zmq_socket(zmq.PUSH, f"tcp://127.0.0.1:{port}") as sender:
        for seq in seqs:
            sender.send(encode(vibration_chunk(sensor, seq, amplitude)))
        # linger 0 would drop what is still queued: wait (bounded) until ZeroMQ handed it to the agent
        sender.setsockopt(zmq.LINGER, 10_000)


class TestNotifyAndSignals:
    @pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
    def test_ready_watchdog_and_clean_stop(self, tmp_path: Path, notify: NotifySocket,
                                           stop_signal: signal.Signals) -> None:
        """READY comes once started, WATCHDOG pings follow; SIGTERM or SIGINT drains and exits 0 with STOPPING."""
        port = free_port()
        daemon = Daemon(tmp_path, zmq_config(tmp_path, port), notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            assert notify.wait_for("WATCHDOG=1", 5)
            push(port, "pump-1", range(3), amplitude=3.0)
            wait_until((tmp_path / "events.jsonl").exists, timeout=20)
        finally:
            daemon.process.send_signal(stop_signal)
            code = daemon.stop()
        assert code == 0, daemon.log()
        assert notify.wait_for("STOPPING=1", 1)
        assert json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["type"] == "energy_high"

    def test_hung_worker_stops_watchdog_pings(self, tmp_path: Path, notify: NotifySocket) -> None:
        """A task stuck inside one call withholds WATCHDOG=1, so systemd would restart the agent."""
        port = free_port()
        daemon = Daemon(tmp_path, zmq_config(tmp_path, port, stuck_after_s=1.0, probe={"delay_s": 30}), notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            assert notify.wait_for("WATCHDOG=1", 5)
            push(port, "pump-1", range(1), amplitude=3.0)

            def silent(seconds: float) -> bool:
                before = notify.count("WATCHDOG=1")
                notify.wait_for("never", seconds)  # take in what arrives meanwhile
                return notify.count("WATCHDOG=1") == before

            # the worker enters its 30 s call once the chunk arrived; from then on no ping may come
            assert wait_until(lambda: silent(2.0), timeout=20, interval=0), "pings continued while the worker hung"
        finally:
            daemon.process.kill()
            daemon.process.wait(10)


    def test_a_task_busy_past_the_drain_deadline_is_left_alone(self, tmp_path: Path, notify: NotifySocket) -> None:
        """A stop while a task is inside a long model run: the agent exits 0 at its drain deadline without
        closing that task's model under it (ONNX Runtime aborts the process when a running session goes)."""
        port = free_port()
        config = zmq_config(tmp_path, port, stuck_after_s=1.0, drain_timeout_s=1.0, probe={"delay_s": 8})
        daemon = Daemon(tmp_path, config, notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            assert notify.wait_for("WATCHDOG=1", 5)
            push(port, "pump-1", range(1), amplitude=3.0)

            def busy() -> bool:  # the watchdog pings stop once the worker is inside its call
                before = notify.count("WATCHDOG=1")
                notify.wait_for("never", 1.5)
                return notify.count("WATCHDOG=1") == before

            assert wait_until(busy, timeout=20, interval=0), daemon.log()
        finally:
            code = daemon.stop()
        assert code == 0, daemon.log()
        assert daemon.log_events("task still busy at the drain deadline; not closed")
        assert "Traceback" not in daemon.log()


class TestReload:
    def test_sighup_reloads_and_a_bad_config_is_refused(self, tmp_path: Path, notify: NotifySocket) -> None:
        """SIGHUP applies a valid new config, refuses an invalid one and keeps running either way."""
        port = free_port()
        config = zmq_config(tmp_path, port)
        daemon = Daemon(tmp_path, config, notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            config["tasks"]["probe"]["threshold"] = 100.0
            daemon.write_config(config)
            daemon.process.send_signal(signal.SIGHUP)
            assert notify.wait_for("RELOADING=1", 10)
            daemon.wait_for_log("configuration reloaded")
            push(port, "pump-1", range(3), amplitude=3.0)  # energy 4.5 < new threshold 100: no event
            daemon.config_path.write_text("device: [not, valid\n")
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for_log("reload refused; keeping the running configuration")
            assert daemon.process.poll() is None
        finally:
            code = daemon.stop()
        assert code == 0
        assert not (tmp_path / "events.jsonl").exists() or not (tmp_path / "events.jsonl").read_text()


class TestAbsentBroker:
    def test_starts_without_broker_and_delivers_once_it_appears(self, tmp_path: Path, notify: NotifySocket) -> None:
        """An unreachable broker at start is not fatal: events wait in the outbox and arrive later."""
        port, broker_port = free_port(), free_port()
        config = zmq_config(tmp_path, port)
        config["sinks"] = [{"kind": "mqtt", "host": "127.0.0.1", "port": broker_port}]
        daemon = Daemon(tmp_path, config, notify)
        broker = Broker(tmp_path, broker_port)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            push(port, "pump-1", range(4), amplitude=3.0)
            daemon.wait_for_log("mqtt connection failed; retrying with backoff", timeout=20)
            broker.start()
            client, received = subscriber(broker_port, "edge/test-device/events/#")
            try:
                events = [json.loads(received.get(timeout=40).payload) for _ in range(4)]
            finally:
                stop_client(client)
            assert {e["type"] for e in events} == {"energy_high"}
        finally:
            code = daemon.stop()
            broker.stop()
        assert code == 0, daemon.log()


class TestStatusTopic:
    def test_retained_online_then_last_will_offline_after_sigkill(self, tmp_path: Path, notify: NotifySocket) -> None:
        """The status topic says online while the agent runs; the broker publishes the will when it dies."""
        broker = Broker(tmp_path, free_port()).start()
        config = zmq_config(tmp_path, free_port())
        config["sinks"] = [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}]
        daemon = Daemon(tmp_path, config, notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            client, received = subscriber(broker.port, "edge/test-device/status")
            try:
                first = received.get(timeout=10)
                assert json.loads(first.payload)["state"] == "online" and first.retain
                daemon.process.send_signal(signal.SIGKILL)
                daemon.process.wait(10)
                last = received.get(timeout=10)
                while json.loads(last.payload)["state"] != "offline":
                    last = received.get(timeout=10)
            finally:
                stop_client(client)
        finally:
            daemon.stop()
            broker.stop()

"""The daemon as systemd runs it: notify socket, watchdog, signals, reload, an absent broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from sensors.wire import encode
from tests.conftest import Broker, free_port
from tests.support import agent_config, vibration_chunk, write_energy_model

REPO = Path(__file__).resolve().parents[1]


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[str] = []

    def wait_for(self, state: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(state in message for message in self.received):
                return True
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return False

    def count(self, state: str) -> int:
        return sum(state in message for message in self.received)

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """``edge-agent run`` in a subprocess, as systemd would start it."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], notify: NotifySocket) -> None:
        self.config_path = tmp_path / "agent.yaml"
        self.write_config(config)
        self.log_path = tmp_path / "agent.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump({**config, "plugins": ["tests.support"]}))

    def log(self) -> str:
        return self.log_path.read_text()

    def log_events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    def stop(self) -> int:
        """SIGTERM and wait; a daemon that does not stop in 30 s is killed (and the test fails on its code)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return -signal.SIGKILL


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
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sender = context.socket(zmq.PUSH)
    sender.connect(f"tcp://127.0.0.1:{port}")
    for seq in seqs:
        sender.send(encode(vibration_chunk(sensor, seq, amplitude)))
    sender.close(linger=2000)


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
            deadline = time.monotonic() + 10
            while not (tmp_path / "events.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
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
            time.sleep(1.5)  # the worker is now inside its 30 s call
            notify.wait_for("never", 1.0)  # take in the pings sent before the hang was noticed
            before = notify.count("WATCHDOG=1")
            notify.wait_for("never", 2.0)
            assert notify.count("WATCHDOG=1") == before, "pings continued while the worker hung"
        finally:
            daemon.process.kill()
            daemon.process.wait(10)


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
            deadline = time.monotonic() + 10
            while not daemon.log_events("configuration reloaded") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert daemon.log_events("configuration reloaded"), daemon.log()
            push(port, "pump-1", range(3), amplitude=3.0)  # energy 4.5 < new threshold 100: no event
            daemon.config_path.write_text("device: [not, valid\n")
            daemon.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not daemon.log_events("reload refused; keeping the running configuration") \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            assert daemon.log_events("reload refused; keeping the running configuration")
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
            time.sleep(1.0)
            broker.start()
            from tests.test_agent_integration import subscriber

            client, received = subscriber(broker_port, "edge/test-device/events/#")
            events = [json.loads(received.get(timeout=40).payload) for _ in range(4)]
            assert {e["type"] for e in events} == {"energy_high"}
            client.loop_stop()
        finally:
            code = daemon.stop()
            broker.stop()
        assert code == 0, daemon.log()


class TestStatusTopic:
    def test_retained_online_then_last_will_offline_after_sigkill(self, tmp_path: Path, notify: NotifySocket) -> None:
        """The status topic says online while the agent runs; the broker publishes the will when it dies."""
        from tests.test_agent_integration import subscriber

        broker = Broker(tmp_path, free_port()).start()
        config = zmq_config(tmp_path, free_port())
        config["sinks"] = [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}]
        daemon = Daemon(tmp_path, config, notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            client, received = subscriber(broker.port, "edge/test-device/status")
            first = received.get(timeout=10)
            assert json.loads(first.payload)["state"] == "online" and first.retain
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait(10)
            last = received.get(timeout=10)
            while json.loads(last.payload)["state"] != "offline":
                last = received.get(timeout=10)
            client.loop_stop()
        finally:
            broker.stop()

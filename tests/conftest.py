"""Shared fixtures: a real Mosquitto broker on a free port, free ports, tiny ONNX models."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture(autouse=True, scope="session")
def _paho_closes_its_socket_pair() -> Iterator[None]:
    """Test clients stop like the agent's own (sensors.mqtt.stop_client): paho-mqtt 2.2 otherwise keeps the
    socket pair of ``loop_start`` open until garbage collection, which warns (an error in this suite)."""
    original = mqtt.Client.loop_stop

    def loop_stop(self: mqtt.Client) -> mqtt.MQTTErrorCode:
        result = original(self)
        self._reset_sockets(sockpair_only=True)
        return result

    mqtt.Client.loop_stop = loop_stop  # type: ignore[method-assign]
    yield
    mqtt.Client.loop_stop = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agents (and the CLI subprocesses tests start) keep their per-device locks in a folder of this run."""
    os.environ["EDGE_AGENT_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("run"))
    yield
    os.environ.pop("EDGE_AGENT_RUNTIME_DIR", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """A Mosquitto process the test owns: it can be killed, paused and restarted on the same port."""

    def __init__(self, directory: Path, port: int, extra_config: str = "", persistent: bool = False) -> None:
        self.port = port
        self.config = directory / f"mosquitto-{port}.conf"
        # persistent: sessions and queued messages saved after every change, as a plant's broker would
        persistence = (f"persistence true\npersistence_location {directory}/\nautosave_interval 1\n"
                       "autosave_on_changes true\n") if persistent else "persistence false\n"
        self.config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            f"max_queued_messages 100000\n{extra_config}"
        )
        self.log = directory / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on {self.port}: {self.log.read_text()}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto broker on a free port, stopped after the test."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto package")
    running = Broker(tmp_path, free_port()).start()
    yield running
    running.stop()

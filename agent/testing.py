"""Helpers to test a deployment or a plug-in against real parts: Mosquitto, MQTT and ZeroMQ clients, the daemon.

Everything here waits by polling with a deadline (``wait_until``) or by a handshake, never by a
fixed sleep, and closes what it opens, so that a test stays correct on a busy machine and a hang
fails within seconds. Only run-time dependencies are imported (no pytest): the module can be
used from any test runner.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import yaml
import zmq
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import parse_config
from agent.daemon import Agent
from sensors.mqtt import stop_client

__all__ = ["MOSQUITTO", "Broker", "CertPair", "Daemon", "NotifySocket", "Pki", "RunningAgent", "Subscriber",
           "free_port", "make_pki", "publisher", "stop_client", "subscriber", "wait_for_listener", "wait_until",
           "zmq_socket"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parents[1]  # the source checkout (deploy/, tests/) when run from one
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02,
               message: str = "") -> T:
    """Poll ``condition`` until it returns something true and return that; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(message or f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_for_listener(port: int, process: subprocess.Popen[bytes] | None = None, log: Path | None = None,
                      timeout: float = 10.0) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:``port``; RuntimeError (with ``log``) if
    ``process`` exits first or the timeout passes."""
    def accepts() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text() if log else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    try:
        wait_until(accepts, timeout, 0.05)
    except TimeoutError:
        raise RuntimeError(f"nothing listens on {port} after {timeout} s: {log.read_text() if log else ''}") from None


RUN_AS_CALLER = "user root\n" if os.geteuid() == 0 else ""


class Broker:
    """A Mosquitto process the test owns: it can be killed, paused and restarted on the same port."""

    def __init__(self, directory: Path, port: int, extra_config: str = "", persistent: bool = False) -> None:
        self.port = port
        self.config = directory / f"mosquitto-{port}.conf"
        # persistent: sessions and queued messages saved after every change, as a plant's broker would; run
        # as root, Mosquitto drops to the mosquitto user, which cannot write the test's folder: it stays root
        persistence = (f"persistence true\npersistence_location {directory}/\nautosave_interval 1\n"
                       f"autosave_on_changes true\n{RUN_AS_CALLER}") if persistent else "persistence false\n"
        # subscriptions are logged so that a test can wait for a subscriber instead of sleeping
        logging = "".join(f"log_type {kind}\n" for kind in ("error", "warning", "notice", "information", "subscribe"))
        self.config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            f"max_queued_messages 100000\n{logging}{extra_config}"
        )
        self.log = directory / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        """Start it and return once it accepts connections."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            wait_for_listener(self.port, self.process, self.log)
        except RuntimeError as error:
            self.kill()
            raise RuntimeError(f"mosquitto did not start on {self.port}: {error}") from None
        return self

    def wait_for_subscription(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Return once ``count`` subscriptions to exactly ``topic`` were logged (by any client)."""
        def subscribed() -> bool:
            lines = self.log.read_text(errors="replace").splitlines()
            return sum(line.endswith(f" {topic}") and line.split()[-2].isdigit() for line in lines) >= count
        wait_until(subscribed, timeout, 0.05, f"nobody subscribed to {topic} on port {self.port}")

    def pause(self) -> None:
        """SIGSTOP: the TCP connections stay open but the broker says nothing (a hung broker)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()  # a paused broker cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


class Subscriber:
    """Subscribes (QoS 1) before the test publishes; ``wait_for(n)`` blocks until n messages arrived."""

    def __init__(self, port: int, topic: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.qos: list[int] = []  # the QoS each message was delivered with
        self._changed = threading.Condition()
        self._subscribed = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        with self._changed:
            if not self._changed.wait_for(lambda: self._subscribed, timeout=10):
                self.close()
                raise TimeoutError(f"no SUBACK for {topic}")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode],
                      properties: object) -> None:
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append((message.topic, bytes(message.payload)))
            self.qos.append(message.qos)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """The messages so far, once at least ``count`` arrived (or the timeout passed)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)

    def settle(self, quiet_s: float = 0.2) -> list[tuple[str, bytes]]:
        """The messages once none arrived for ``quiet_s`` (to catch extra, unexpected ones)."""
        seen = -1
        while seen != len(self.received):
            seen = len(self.received)
            time.sleep(quiet_s)  # the quiet period is what is asked for: nothing can signal "no more messages"
        return list(self.received)

    def close(self) -> None:
        stop_client(self.client)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def subscriber(port: int, topic: str) -> tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]:
    """A client subscribed (SUBACK received) to ``topic`` and the queue its messages go to; stop it with
    ``stop_client``."""
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda c, u, m: received.put(m)
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not ready.wait(10):
        stop_client(client)
        raise TimeoutError(f"subscription to {topic} not acknowledged")
    return client, received


def publisher(port: int) -> mqtt.Client:
    """A connected client with its network loop running; stop it with ``stop_client``."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@contextmanager
def zmq_socket(kind: int, connect: str | None = None, bind: str | None = None, timeout_ms: int = 10_000,
               subscribe: bytes | None = None, **options: Any) -> Iterator[zmq.Socket[bytes]]:
    """A ZeroMQ socket that never blocks for ever: send and receive time out (``zmq.Again``), linger is 0
    (raise it before the end of the block to deliver what is still queued), and it is closed on exit.
    ``options`` are socket options set before connecting (``curve_serverkey=...``); a SUB socket gets
    ``subscribe``."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        for name, value in options.items():
            setattr(sock, name, value)
        if subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe)
        if bind:
            sock.bind(bind)
        if connect:
            sock.connect(connect)
        yield sock
    finally:
        sock.close()  # with the socket's own linger


class RunningAgent:
    """An agent running its supervision loop on a thread, stopped by the test."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.agent = Agent(parse_config(config))
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop_requested.set()
        self.thread.join(20)


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET: the daemon says READY=1 on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[str] = []

    def wait_for(self, state: str, timeout: float) -> bool:
        """Whether a message containing ``state`` arrived within ``timeout`` s (or before)."""
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
    """``edge-agent run`` in a subprocess, as systemd would start it; ``plugins`` are added to its config."""

    def __init__(self, tmp_path: Path, config: dict[str, Any], notify: NotifySocket,
                 plugins: Sequence[str] = ()) -> None:
        self.plugins = list(plugins)
        self.config_path = tmp_path / "agent.yaml"
        self.write_config(config)
        self.log_path = tmp_path / "agent.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def write_config(self, config: dict[str, Any]) -> None:
        plugins = [*config.get("plugins", []), *self.plugins]
        self.config_path.write_text(yaml.safe_dump({**config, "plugins": plugins} if plugins else config))

    def log(self) -> str:
        return self.log_path.read_text()

    def log_events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    def wait_for_log(self, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The JSON log lines whose event is ``name``, once there is one; TimeoutError with the log if none."""
        try:
            return wait_until(lambda: self.log_events(name), timeout, 0.05)
        except TimeoutError:
            raise TimeoutError(f"no {name!r} in the agent's log:\n{self.log()}") from None

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


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A trial PKI: the CA, the broker's certificate, client certificates, and a CA nobody should trust."""

    ca_cert: Path
    server: CertPair
    clients: dict[str, CertPair] = field(default_factory=dict)
    wrong_ca_cert: Path | None = None
    wrong_clients: dict[str, CertPair] = field(default_factory=dict)


def run_certs_sh(directory: Path, clients: tuple[str, ...], server_names: tuple[str, ...],
                 script: Path = ROOT / "deploy" / "certs.sh") -> None:
    """Run deploy/certs.sh (the operator's trial-PKI script) into ``directory``; raises with its output on failure."""
    arguments = ["bash", str(script), "-o", str(directory)]
    for name in server_names:
        arguments += ["-s", name]
    for name in clients:
        arguments += ["-c", name]
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"certs.sh failed ({result.returncode}): {result.stdout}{result.stderr}")


def make_pki(directory: Path, clients: tuple[str, ...] = ("device-01",),
             server_names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Pki:
    """Make a CA, a server certificate for ``server_names`` and one client certificate per name.

    A second, unrelated CA with its own server and client certificates is made beside it,
    for tests of clients and brokers that must not trust each other. The certificates come from
    deploy/certs.sh, so a test that uses them also proves that script's output works.
    """
    good, wrong = directory / "pki", directory / "wrong-pki"
    run_certs_sh(good, clients, server_names)
    run_certs_sh(wrong, clients, server_names)

    def pairs(folder: Path) -> dict[str, CertPair]:
        return {name: CertPair(folder / f"{name}.crt", folder / f"{name}.key") for name in clients}

    return Pki(ca_cert=good / "ca.crt", server=CertPair(good / "server.crt", good / "server.key"),
               clients=pairs(good), wrong_ca_cert=wrong / "ca.crt", wrong_clients=pairs(wrong))

"""Tests of the systemd integration against a real unix datagram socket standing in for NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import systemd
from agent.testing import wait_until


class Listener:
    """The receiving end of sd_notify: a bound AF_UNIX datagram socket, as systemd has."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float = 2.0) -> str | None:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536).decode()
        except TimeoutError:
            return None

    def collect(self, seconds: float) -> list[str]:
        """Every message arriving within the next ``seconds``."""
        deadline = time.monotonic() + seconds
        messages = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                messages.append(message)
        return messages

    def wait_for_count(self, message: str, count: int, timeout: float = 10.0) -> bool:
        """Whether ``count`` copies of ``message`` arrive within ``timeout`` seconds (True as soon as they did)."""
        seen: list[str] = []

        def enough() -> bool:
            seen.extend(self.collect(0.05))
            return seen.count(message) >= count

        return wait_until(enough, timeout, interval=0)

    def drain(self) -> None:
        while self.receive(0.01) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A notify socket at a short path (unix socket paths are limited to 108 bytes) set as NOTIFY_SOCKET."""
    with tempfile.TemporaryDirectory(prefix="ea-sd-") as directory:
        path = str(Path(directory) / "notify")
        bound = Listener(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield bound
        bound.close()


class TestNotify:
    def test_ready_arrives(self, listener: Listener) -> None:
        """ready() sends READY=1 to the socket named by NOTIFY_SOCKET and reports success."""
        assert systemd.ready() is True
        assert listener.receive() == "READY=1"

    def test_stopping_and_watchdog_messages(self, listener: Listener) -> None:
        """stopping() and watchdog() send STOPPING=1 and WATCHDOG=1."""
        systemd.stopping()
        systemd.watchdog()
        assert [listener.receive(), listener.receive()] == ["STOPPING=1", "WATCHDOG=1"]

    def test_reloading_carries_monotonic_time(self, listener: Listener) -> None:
        """reloading() sends RELOADING=1 with MONOTONIC_USEC taken from CLOCK_MONOTONIC now."""
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        systemd.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        message = listener.receive()
        assert message is not None
        first, second = message.split("\n")
        assert first == "RELOADING=1"
        key, value = second.split("=")
        assert key == "MONOTONIC_USEC"
        assert before <= int(value) <= after

    def test_status_is_one_line(self, listener: Listener) -> None:
        """status() flattens a multi-line text so it cannot inject other KEY=VALUE assignments."""
        systemd.status("running\nREADY=1")
        assert listener.receive() == "STATUS=running READY=1"

    def test_abstract_socket(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An '@name' NOTIFY_SOCKET reaches the socket bound at that name in the abstract namespace."""
        name = f"edge-agent-test-{uuid.uuid4().hex}"
        abstract = Listener("\0" + name)
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
            assert systemd.ready() is True
            assert abstract.receive() == "READY=1"
        finally:
            abstract.close()

    def test_unset_socket_is_a_no_op(self, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without NOTIFY_SOCKET every call returns False and nothing is sent anywhere."""
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert [systemd.ready(), systemd.watchdog(), systemd.reloading(), systemd.stopping()] == [False] * 4
        assert listener.receive(0.2) is None

    def test_environment_read_at_call_time(self, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NOTIFY_SOCKET set after import is honoured, and unsetting it later is honoured too."""
        assert systemd.notify("X=1") is True
        monkeypatch.delenv("NOTIFY_SOCKET")
        assert systemd.notify("X=2") is False
        assert listener.collect(0.2) == ["X=1"]

    def test_missing_socket_returns_false(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A NOTIFY_SOCKET that nobody listens on gives False instead of raising."""
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
        assert systemd.ready() is False

    def test_relative_address_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NOTIFY_SOCKET that is neither an absolute path nor '@name' is not used."""
        monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
        assert systemd.ready() is False

    @settings(max_examples=30, deadline=None)
    @given(state=st.text(st.characters(codec="utf-8"), min_size=1, max_size=500))
    def test_any_text_round_trips(self, state: str) -> None:
        """Whatever text notify() is given arrives byte for byte as UTF-8 in one datagram."""
        with tempfile.TemporaryDirectory(prefix="ea-sd-") as directory:
            path = str(Path(directory) / "notify")
            bound = Listener(path)
            old = os.environ.get("NOTIFY_SOCKET")
            os.environ["NOTIFY_SOCKET"] = path
            try:
                assert systemd.notify(state) is True
                assert bound.receive() == state
            finally:
                bound.close()
                if old is None:
                    del os.environ["NOTIFY_SOCKET"]
                else:
                    os.environ["NOTIFY_SOCKET"] = old


class TestWatchdogInterval:
    def test_interval_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """WATCHDOG_USEC=30000000 with our own WATCHDOG_PID means a 30 s watchdog."""
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert systemd.watchdog_interval() == 30.0

    def test_interval_without_pid(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without WATCHDOG_PID the watchdog is taken to be ours."""
        monkeypatch.setenv("WATCHDOG_USEC", "500000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert systemd.watchdog_interval() == 0.5

    def test_other_pid_is_not_ours(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A WATCHDOG_PID of another process (inherited variables) means no watchdog for us."""
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        assert systemd.watchdog_interval() is None

    @pytest.mark.parametrize("value", ["", "0", "-5", "thirty", "1.5"])
    def test_unusable_values(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """Missing, zero, negative or non-integer WATCHDOG_USEC means no watchdog."""
        monkeypatch.setenv("WATCHDOG_USEC", value)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert systemd.watchdog_interval() is None


class TestWatchdog:
    def test_pings_only_while_progress(self, listener: Listener) -> None:
        """WATCHDOG=1 arrives while progress is reported, stops when it is not, and resumes after."""
        progress = threading.Event()
        progress.set()
        with systemd.Watchdog(progress.is_set, interval=0.2) as dog:
            assert dog.interval == 0.2
            assert listener.wait_for_count("WATCHDOG=1", 2)
            progress.clear()
            wait_until(lambda: dog.missed >= 1)  # so a ping decided before the flag flipped was sent already
            listener.drain()
            assert listener.collect(0.6) == []  # the silence is what is tested
            assert wait_until(lambda: dog.missed >= 2)
            progress.set()
            assert listener.receive() == "WATCHDOG=1"

    def test_hung_worker_stops_pings(self, listener: Listener) -> None:
        """With a 'heartbeat seen recently' predicate, a worker thread that hangs stops the pings."""
        last_beat = [time.monotonic()]
        hang = threading.Event()
        done = threading.Event()

        def worker() -> None:
            while not done.is_set():
                if not hang.is_set():
                    last_beat[0] = time.monotonic()
                time.sleep(0.02)  # the worker's own pace: a heartbeat every 20 ms

        def fresh() -> bool:
            return time.monotonic() - last_beat[0] < 0.15

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            with systemd.Watchdog(fresh, interval=0.1) as dog:
                assert listener.wait_for_count("WATCHDOG=1", 1)
                hang.set()
                assert wait_until(lambda: not fresh())
                wait_until(lambda: dog.missed >= 1)  # so a ping decided before the hang was sent already
                listener.drain()
                assert listener.collect(0.4) == []  # the silence is what is tested
        finally:
            done.set()
            thread.join(5)

    def test_failing_predicate_stops_pings(self, listener: Listener) -> None:
        """A progress check that raises counts as no progress: no pings, no crash of the thread."""
        def broken() -> bool:
            raise RuntimeError("queue gone")

        with systemd.Watchdog(broken, interval=0.1) as dog:
            assert listener.collect(0.4) == []
            assert wait_until(lambda: dog.missed >= 2)

    def test_interval_read_from_environment_at_start(
        self, listener: Listener, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without an explicit interval, start() uses WATCHDOG_USEC as it is when start() is called."""
        dog = systemd.Watchdog(lambda: True)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert dog.start() is True
        try:
            assert dog.interval == 0.2
            assert listener.receive() == "WATCHDOG=1"
        finally:
            dog.stop()

    def test_no_watchdog_configured(self, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without WATCHDOG_USEC, start() returns False and nothing is sent."""
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        dog = systemd.Watchdog(lambda: True)
        assert dog.start() is False
        assert listener.receive(0.2) is None
        dog.stop()

    def test_stop_ends_the_pings(self, listener: Listener) -> None:
        """After stop() returns no further ping is sent."""
        dog = systemd.Watchdog(lambda: True, interval=0.1)
        dog.start()
        assert listener.receive() == "WATCHDOG=1"
        dog.stop()
        listener.drain()
        assert listener.collect(0.3) == []

"""systemd integration without a dependency: sd_notify messages, watchdog pings gated on progress.

The protocol is a datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); see sd_notify(3).
Every function reads the environment when called, never at import, so the same process can
run under systemd, in a container or in a test with a fake socket. Without ``$NOTIFY_SOCKET``
every call is a no-op that returns False.

How the daemon uses it:

- ``ready()`` once models are loaded and sources and the outbox are open;
- ``reloading()`` on SIGHUP, then ``ready()`` again when the reload is done;
- ``stopping()`` at the start of the shutdown path;
- a :class:`Watchdog` whose progress predicate is True only while every worker has reported a
  heartbeat recently, so that a hung worker stops the pings and systemd restarts the service
  after ``WatchdogSec``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def _address(value: str) -> str | None:
    """The socket address for a ``$NOTIFY_SOCKET`` value: a path, or '@name' (abstract namespace)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock:... and other forms of newer systemd are not needed on an edge box


NOTIFY_TIMEOUT_S = 1.0


def notify(state: str) -> bool:
    """Send one sd_notify message (e.g. ``"READY=1"``); True if it was sent, False if not under systemd."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _address(value)
    if address is None:
        log.warning("unsupported NOTIFY_SOCKET address, not notifying", notify_socket=value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # a reader that stopped reading (a full socket queue) must not hang the agent, e.g. on its way out
            sock.settimeout(NOTIFY_TIMEOUT_S)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        # A lost notification must not take the daemon down; systemd's own timeouts will show it.
        log.warning("sd_notify failed", notify_socket=value, state=state.split("\n", 1)[0], error=str(error))
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is finished (Type=notify services stay 'activating' until this)."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd the service is shutting down."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """Tell systemd a reload started; send :func:`ready` when it is done.

    MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this message to the reload
    it asked for; older versions ignore the field.
    """
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={now_us}")


def status(text: str) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    """Send one watchdog keep-alive ping."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (``WatchdogSec``), or None if no watchdog is meant for this process.

    systemd sets ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``; a PID that is not ours means the
    variables were inherited from a parent, so they are not for us. Ping at half this interval.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    try:
        interval = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return interval / 1e6 if interval > 0 else None


class Watchdog:
    """Pings the systemd watchdog at half its interval, but only while ``progress()`` returns True.

    When the predicate returns False (or raises), pings stop and systemd kills and restarts the
    service after ``WatchdogSec``: a hung pipeline is restarted rather than kept alive by a
    healthy-looking ping thread. ``interval`` (seconds) defaults to :func:`watchdog_interval`
    read at :meth:`start`; without one, :meth:`start` does nothing and returns False.
    """

    def __init__(self, progress: Callable[[], bool], interval: float | None = None,
                 send: Callable[[], bool] = watchdog) -> None:
        self._progress = progress
        self._interval = interval
        self._send = send
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.missed = 0

    @property
    def interval(self) -> float | None:
        return self._interval

    def start(self) -> bool:
        """Start the ping thread; False (and nothing started) when no watchdog is configured."""
        if self._thread is not None:
            return True
        if self._interval is None:
            self._interval = watchdog_interval()
        if self._interval is None:
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(self._interval / 2,),
                                        name="systemd-watchdog", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pinging and wait up to ``timeout`` seconds for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _making_progress(self) -> bool:
        try:
            return bool(self._progress())
        except Exception as error:  # a broken predicate is a reason to stop pinging, not to crash
            log.error("watchdog progress check failed", error=repr(error))
            return False

    def _loop(self, period: float) -> None:
        stalled = False
        while not self._stop.is_set():
            if self._making_progress():
                if stalled:
                    log.info("pipeline making progress again, watchdog pings resumed")
                stalled = False
                self._send()
                self.pings += 1
            else:
                if not stalled:
                    log.error("pipeline not making progress, withholding watchdog pings",
                              restart_after_s=2 * period)
                stalled = True
                self.missed += 1
            self._stop.wait(period)

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

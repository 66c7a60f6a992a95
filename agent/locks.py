"""One agent per state directory and per device id on a machine: file locks taken before anything connects.

Two agents on one state directory would share an outbox and learnt state; two with one device id
would take each other's MQTT client ids and knock each other off the broker. ``fcntl.flock`` locks
vanish with their process, so a killed agent never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

from sensors.errors import AlreadyRunning, StateError

__all__ = ["AgentLocks", "runtime_dir"]

#: the systemd unit's RuntimeDirectory=
SYSTEM_RUNTIME_DIR = Path("/run/edge-agent")


def runtime_dir() -> Path:
    """Where per-device locks live: ``$EDGE_AGENT_RUNTIME_DIR``, else ``/run/edge-agent`` when this user can
    write there, else ``edge-agent`` in the user's runtime dir (``$XDG_RUNTIME_DIR``, or the temp dir)."""
    if os.environ.get("EDGE_AGENT_RUNTIME_DIR"):
        return Path(os.environ["EDGE_AGENT_RUNTIME_DIR"])
    if os.access(SYSTEM_RUNTIME_DIR, os.W_OK | os.X_OK):
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"edge-agent-{os.getuid()}"


class AgentLocks:
    """Holds ``<state_dir>/agent.lock`` and ``<runtime dir>/device-<id>.lock`` until released."""

    def __init__(self, state_dir: Path, device: str) -> None:
        self.paths = {"state directory": state_dir / "agent.lock",
                      "device id": runtime_dir() / f"device-{device}.lock"}
        self.what = {"state directory": str(state_dir), "device id": device}
        self.held: list[IO[str]] = []

    def acquire(self) -> AgentLocks:
        """Take both locks; AlreadyRunning (naming the holder's pid) if another agent has one."""
        try:
            for name, path in self.paths.items():
                self.held.append(self._lock(name, path))
        except BaseException:
            self.release()
            raise
        return self

    def _lock(self, name: str, path: Path) -> IO[str]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except OSError as error:
            raise StateError(f"cannot create the lock file {path}: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(f"another agent (pid {holder}) already runs with {name} {self.what[name]}; "
                                 f"stop it first, or give this one its own {name}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def release(self) -> None:
        """Drop the locks (closing the files releases them); the files stay, harmlessly."""
        while self.held:
            self.held.pop().close()

    def __enter__(self) -> AgentLocks:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

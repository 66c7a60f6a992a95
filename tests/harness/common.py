"""What the soak and fuzz harnesses share: the agent subprocess, its RSS, the event collector, a deterministic input."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sensors.wire import Kind, SensorMessage, encode
from tests.conftest import agent_config, write_energy_model
from tests.test_daemon import Daemon, NotifySocket

BASE_NS = 1_700_000_000_000_000_000
SAMPLES = 250  # per chunk; at RATE, four chunks make one of the probe task's 1 s windows
RATE = 1000.0
TASK = "probe"
EVENT_TYPE = "energy_high"


def chunk(sensor: str, seq: int, amplitude: float = 3.0) -> bytes:
    """Chunk ``seq`` of a sensor's sine, in wire bytes: the same bytes for the same arguments, every run."""
    t = (np.arange(SAMPLES) + seq * SAMPLES) / RATE
    data = (amplitude * np.sin(2 * np.pi * 50 * t)).astype(np.float32)[:, None]
    when = BASE_NS + seq * int(SAMPLES / RATE * 1e9)
    return encode(SensorMessage(sensor, Kind.VIBRATION, seq, when, data, RATE))


def window_time(seq: int) -> int:
    """Source time (ns) of the window that chunk ``seq`` belongs to."""
    per_window = int(RATE / SAMPLES)
    return BASE_NS + (seq // per_window) * per_window * int(SAMPLES / RATE * 1e9)


def event_key(event: dict[str, Any]) -> tuple[str, str, str, str]:
    """How an event is matched with the reference: sensor, task, type and source time."""
    return event["sensor"], event["task"], event["type"], event["source_time"]


@dataclass
class AgentProcess:
    """``edge-agent run`` as systemd would start it, one log folder per start so crashes can be read back."""

    folder: Path
    config: dict[str, Any]
    starts: int = 0
    daemon: Daemon | None = None
    notify: NotifySocket | None = None
    crash_codes: list[int | None] = field(default_factory=list)

    def start(self, timeout_s: float = 60) -> None:
        run = self.folder / f"run-{self.starts:05d}"
        run.mkdir(parents=True)
        self.starts += 1
        self.notify = NotifySocket(run / "notify.sock")
        self.daemon = Daemon(run, self.config, self.notify)
        if not self.notify.wait_for("READY=1", timeout_s):
            raise RuntimeError(f"agent not ready in {timeout_s} s: {self.daemon.log()[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.daemon is None else self.daemon.process.poll()

    def restart_if_exited(self) -> bool:
        """An exit the harness did not cause is a crash: restart, as systemd would, so the run goes on.

        Returns whether it had exited; its exit code is then in ``crash_codes``.
        """
        if self.alive:
            return False
        self.crash_codes.append(self.exit_code)
        self._close_notify()
        self.start()
        return True

    def rss_mb(self) -> float:
        if not self.alive or self.daemon is None:
            return float("nan")
        with open(f"/proc/{self.daemon.process.pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def kill(self) -> None:
        if self.daemon is not None and self.alive:
            self.daemon.process.send_signal(signal.SIGKILL)
            self.daemon.process.wait(10)
        self._close_notify()

    def stop(self) -> int | None:
        code = self.daemon.stop() if self.daemon is not None else None
        self._close_notify()
        return code

    def _close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None


def probe_agent_config(folder: Path, state_dir: Path, sources: list[dict[str, Any]], broker_port: int,
                       journal: Path | None = None, **extra: Any) -> dict[str, Any]:
    """The probe task (a real ONNX model) on 1 s windows, publishing events to the broker with QoS 1; with
    ``journal``, every event the agent made is also written there (a jsonl sink), to tell apart an event
    never made from one made but not delivered."""
    model = write_energy_model(folder / "model")
    sinks: list[dict[str, Any]] = [{"kind": "mqtt", "host": "127.0.0.1", "port": broker_port, "keepalive_s": 2}]
    if journal is not None:
        sinks.append({"kind": "jsonl", "path": str(journal)})
    return agent_config(state_dir, model, sources, sinks, **extra)



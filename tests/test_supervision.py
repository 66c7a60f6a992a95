"""Self-protection: crashed workers restarted with a rate limit, a memory budget, sensor liveness events."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from agent.testing import wait_until
from tests.conftest import agent_config, free_port, write_energy_model
from tests.test_agent_integration import RunningAgent
from tests.test_daemon import Daemon, NotifySocket, push, zmq_config


def event_types(path: Path) -> list[str]:
    """The types of the events written so far to a JSONL sink."""
    if not path.exists():
        return []
    return [json.loads(line)["type"] for line in path.read_text().splitlines() if line.endswith("}")]


def crashed(daemon: Daemon, times: int) -> bool:
    """Whether the daemon's worker died ``times`` times, or the daemon exited."""
    return daemon.process.poll() is not None or len(daemon.log_events("task worker died; restarting")) >= times


class TestWorkerCrashes:
    def test_crashed_worker_is_restarted_and_a_crash_loop_ends_the_process(self, tmp_path: Path) -> None:
        """Each crash restarts the worker (counted); more than 5 a minute exits 70 for systemd to take over."""
        port = free_port()
        notify = NotifySocket(tmp_path / "notify.sock")
        daemon = Daemon(tmp_path, zmq_config(tmp_path, port, probe={"fatal": True}), notify)
        try:
            assert notify.wait_for("READY=1", 30), daemon.log()
            for seq in range(8):
                if daemon.process.poll() is not None:
                    break
                push(port, "pump-1", range(seq, seq + 1), amplitude=3.0)
                # one crash at a time: the next chunk goes to the restarted worker
                wait_until(partial(crashed, daemon, seq + 1), 30)
            code = daemon.process.wait(30)
        finally:
            daemon.stop()
            notify.close()
        assert code == 70, daemon.log()
        restarts = daemon.log_events("task worker died; restarting")
        assert len(restarts) >= 5
        assert daemon.log_events("workers keep dying; exiting for systemd to restart the agent")


class TestMemoryBudget:
    def test_over_budget_exits_75_with_the_reason(self, tmp_path: Path) -> None:
        """Above max_rss_mb the agent logs why and exits 75 (EX_TEMPFAIL) so that systemd restarts it."""
        notify = NotifySocket(tmp_path / "notify.sock")
        daemon = Daemon(tmp_path, zmq_config(tmp_path, free_port(), max_rss_mb=5), notify)
        try:
            code = daemon.process.wait(60)
        finally:
            notify.close()
        assert code == 75, daemon.log()
        assert daemon.log_events("memory budget exceeded; exiting for a restart (nothing is lost: outbox and "
                                 "state are on disk)")


class TestSensorLiveness:
    def test_silent_sensor_goes_offline_and_comes_back(self, tmp_path: Path) -> None:
        """A configured sensor silent for longer than sensor_timeout_s raises sensor_offline, then sensor_online on
        return; an unknown id that sent once (junk) raises neither."""
        model = write_energy_model(tmp_path / "model")
        inbound = free_port()
        events = tmp_path / "events.jsonl"
        running = RunningAgent(agent_config(
            tmp_path / "state", model, [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{inbound}"}],
            [{"kind": "jsonl", "path": str(events)}], sensor_timeout_s=1.0,
            probe={"threshold": 1e9, "sensors": ["fan-9"]}))
        try:
            push(inbound, "junk-1", range(0, 1), amplitude=0.1)
            push(inbound, "fan-9", range(0, 1), amplitude=0.1)
            wait_until(lambda: "sensor_offline" in event_types(events), 20)
            push(inbound, "fan-9", range(1, 2), amplitude=0.1)
            wait_until(lambda: "sensor_online" in event_types(events), 20)
        finally:
            running.stop()
        types = event_types(events)
        assert types[:2] == ["sensor_offline", "sensor_online"]
        assert all(json.loads(line)["sensor"] == "fan-9" for line in events.read_text().splitlines())

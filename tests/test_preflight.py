"""Preflight (validate-config, and run before it opens anything), the one-agent locks, caches under state_dir."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import structlog
import yaml

from agent import preflight
from agent.config import parse_config
from agent.daemon import Agent
from agent.events import EventDraft, ModelRef
from agent.locks import AgentLocks
from agent.tasks import TASKS
from agent.tasks.base import Task, TaskConfig, TaskContext
from agent.tasks.vibration.task import VibrationConfig, VibrationTask
from agent.testing import wait_until
from agent.windowing import Window
from models.runtime import cache_path, load_model
from models.vibration.runtime.monitor import MachineMonitor
from sensors.errors import AlreadyRunning, ConfigError, EdgeAgentError, ModelError, RecordingError, StateError
from sensors.wire import Kind, SensorMessage
from tests.cli_runner import cli, config_dict, fails_with
from tests.conftest import Broker


def found(state_dir: Path, **changes: Any) -> list[EdgeAgentError]:
    return preflight.problems(parse_config(config_dict(state_dir, **changes)))


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


class TestPreflight:
    def test_a_good_config_has_no_problems(self, tmp_path: Path) -> None:
        assert found(tmp_path / "state") == []
        assert not (tmp_path / "state").exists()  # checked, not created

    def test_threshold_the_model_cannot_give(self, tmp_path: Path) -> None:
        """``false_reject_target: 0.0001`` used to validate and then stop ``run``; now validate-config says so."""
        config = write(tmp_path / "agent.yaml", config_dict(tmp_path, tasks={"quality": {"false_reject_target": 1e-4}}))
        fails_with(cli("validate-config", config), 1, "no validated threshold for a false-reject rate <= 0.0001")

    def test_missing_model(self, tmp_path: Path) -> None:
        [problem] = found(tmp_path, tasks={"vibration": {"scorer": "lstm_ae", "model": str(tmp_path / "nope")}})
        assert isinstance(problem, ModelError) and "nope" in str(problem)

    def test_manifest_of_the_wrong_task(self, tmp_path: Path) -> None:
        quality = Path(__file__).resolve().parents[1] / "models" / "quality" / "manifest.yaml"
        [problem] = found(tmp_path, tasks={"vibration": {"scorer": "lstm_ae", "model": str(quality)}})
        assert isinstance(problem, ModelError) and "not a vibration model's manifest" in str(problem)

    def test_unreadable_secret_and_tls_files(self, tmp_path: Path) -> None:
        source = {"kind": "mqtt", "password": {"file": str(tmp_path / "password")},
                  "tls": {"ca_file": str(tmp_path / "ca.crt")}}
        problems = [str(problem) for problem in found(tmp_path, sources=[source])]
        assert any(p.startswith("sources[0].password: cannot read the secret file") for p in problems)
        assert any(p.startswith("sources[0].tls.ca_file: cannot read") for p in problems)

    def test_systemd_credentials_are_not_checked_outside_their_unit(self, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        source = {"kind": "mqtt", "password": {"file": "/run/credentials/edge-agent.service/mqtt-password"}}
        assert found(tmp_path, sources=[source]) == []

    def test_state_dir_that_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "state").write_text("")
        [problem] = found(tmp_path / "state" / "inner")
        assert isinstance(problem, StateError) and "is not a folder" in str(problem)

    def test_missing_recording(self, tmp_path: Path) -> None:
        [problem] = found(tmp_path, sources=[{"kind": "recording", "path": str(tmp_path / "x.mcap")}])
        assert isinstance(problem, RecordingError)

    def test_several_problems_in_one_line(self, tmp_path: Path) -> None:
        config = parse_config(config_dict(tmp_path, sources=[{"kind": "recording", "path": str(tmp_path / "x")}],
                                          tasks={"quality": {"false_reject_target": 1e-4}}))
        with pytest.raises(ConfigError, match=r"^2 problems: quality: .*false-reject.*; .*x: no such file") as error:
            preflight.check(config)
        assert "\n" not in str(error.value)

    def test_unknown_key_gets_a_suggestion(self, tmp_path: Path) -> None:
        config = write(tmp_path / "agent.yaml", config_dict(tmp_path, tasks={"quality": {"false_reject_targt": 0.01}}))
        result = cli("validate-config", config)
        assert result.returncode == 1
        assert "false_reject_targt: Extra inputs are not permitted (did you mean 'false_reject_target'?)" \
            in result.stderr

    def test_a_task_brings_its_own_check(self, tmp_path: Path) -> None:
        """The core calls Task.check; it knows no task."""
        TASKS.register("picky", PickyTask)
        try:
            config = parse_config({**config_dict(tmp_path), "tasks": {"picky": {}}})
            assert [str(problem) for problem in preflight.problems(config)] == ["picky: not today"]
        finally:
            TASKS.unregister("picky")


class PickyTask(Task[TaskConfig]):
    """A task whose preflight always fails."""

    name = "picky"
    kinds: ClassVar[frozenset[Kind]] = frozenset({Kind.VIBRATION})

    @classmethod
    def check(cls, config: TaskConfig) -> None:
        raise ConfigError("picky: not today")

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        return []

    def models(self) -> list[ModelRef]:
        return []


def connections(broker: Broker) -> int:
    return broker.log.read_text().count("New client connected")


def mqtt_config(path: Path, state_dir: Path, broker: Broker, **changes: Any) -> Path:
    mqtt = {"host": "127.0.0.1", "port": broker.port}
    return write(path, config_dict(state_dir, sources=[{"kind": "mqtt", **mqtt}], sinks=[{"kind": "mqtt", **mqtt}],
                                   **changes))


def test_run_checks_before_it_connects(tmp_path: Path, broker: Broker) -> None:
    config = mqtt_config(tmp_path / "agent.yaml", tmp_path / "state", broker,
                         tasks={"quality": {"false_reject_target": 1e-4}})
    fails_with(cli("run", "--config", config, "--duration", "5"), 1, "no validated threshold")
    assert connections(broker) == 0


@pytest.fixture
def running_agent(tmp_path: Path, broker: Broker) -> Iterator[subprocess.Popen[str]]:
    """``edge-agent run`` on the test broker, once both its MQTT clients are connected."""
    config = mqtt_config(tmp_path / "agent.yaml", tmp_path / "state", broker)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: connections(broker) >= 2 or process.poll() is not None, 30)
        assert process.poll() is None
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


class TestOneAgent:
    @pytest.mark.parametrize(("what", "same"), [("state directory", "state"), ("device id", "device")])
    def test_second_agent_refuses_before_it_connects(self, tmp_path: Path, broker: Broker,
                                                     running_agent: subprocess.Popen[str], what: str,
                                                     same: str) -> None:
        before = connections(broker)
        state = tmp_path / ("state" if same == "state" else "other-state")
        device = "line3" if same == "device" else "line4"
        config = mqtt_config(tmp_path / "second.yaml", state, broker, device=device)
        line = fails_with(cli("run", "--config", config), 73, "another agent", what)
        assert f"pid {running_agent.pid}" in line
        assert connections(broker) == before and running_agent.poll() is None

    def test_locks_go_with_their_holder(self, tmp_path: Path) -> None:
        with AgentLocks(tmp_path, "line3"), pytest.raises(AlreadyRunning):
            AgentLocks(tmp_path, "line9").acquire()
        with AgentLocks(tmp_path, "line3"):
            pass


def test_engine_caches_follow_state_dir(tmp_path: Path) -> None:
    """The models the daemon loads get a backend whose cache folder is in the agent's state_dir."""
    agent = Agent(parse_config(config_dict(tmp_path, backend={"kind": "tensorrt"})))
    try:
        [task] = agent._build_tasks(agent.config)
        assert isinstance(task.context.load_model, functools.partial)
        assert cache_path(task.context.load_model.keywords["config"]) == tmp_path / "trt-engines"
    finally:
        agent.zmq_context.term()


def test_a_bug_while_resuming_state_is_not_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only StateError means "saved state not usable, learn again"; a ValueError from a bug surfaces."""
    context = TaskContext("edge-1", tmp_path, load_model, structlog.get_logger())
    config = VibrationConfig(window_s=0.5, hop_s=0.5, shaft_hz=None, baseline_windows=40)
    noise = np.random.default_rng(1).normal(size=(4, 4000, 2)).astype(np.float32)
    stream = [Window("pump-1", Kind.VIBRATION, samples, 8000.0, 10**18 + index * 500_000_000, index)
              for index, samples in enumerate(noise)]
    first = VibrationTask(config, context)
    for window in stream:
        first.process(window)
    first.close()

    def broken(self: MachineMonitor, state: dict[str, Any]) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(MachineMonitor, "load_state", broken)
    with pytest.raises(ValueError, match="a bug"):
        VibrationTask(config, context).process(stream[0])

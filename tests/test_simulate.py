"""``edge-agent simulate``: the demo's simulated sensors recorded to MCAP and published to a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from agent.testing import RunningAgent, Subscriber, wait_until
from sensors.recording import RecordingReader
from sensors.wire import Kind, decode
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[1]


def small_factory(tmp_path: Path) -> Path:
    """Two pumps at 2 kHz and a camera: every kind the demo simulates, small enough for a test."""
    config = {"device": "sim", "state_dir": str(tmp_path / "state"),
              "sources": [{"kind": "simulator", "seed": 3,
                           "vibration": {"machines": 2, "faulty": 1, "sample_rate": 2000},
                           "quality": {"cameras": 1, "parts_per_s": 4}}],
              "sinks": [{"kind": "console"}],
              "tasks": {"vibration": {"scorer": "mahalanobis", "sensors": ["pump-*"]},
                        "quality": {"sensors": ["camera-*"]}}}
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def edge_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_simulate_records_every_simulated_sensor_in_time_order(tmp_path: Path) -> None:
    """``--out`` writes a recording that holds each simulated sensor's stream, time-ordered, for ``replay``."""
    out = tmp_path / "sample.mcap"
    done = edge_agent("simulate", "--out", str(out), "--duration", "3", "--config", str(small_factory(tmp_path)))
    assert done.returncode == 0, done.stderr
    with RecordingReader(out) as reader:
        messages = [(topic, decode(raw)) for _, topic, raw in reader]
    sensors = {message.sensor_id for _, message in messages}
    assert sensors == {"pump-00", "pump-01", "camera-00"}
    times = [message.timestamp_ns for _, message in messages]
    assert times == sorted(times) and times[-1] - times[0] < 3 * 10**9
    assert all(topic == f"edge/sensors/{'frame' if m.kind == Kind.FRAME else 'vibration'}/{m.sensor_id}"
               for topic, m in messages)


def test_simulate_publishes_to_a_broker_in_real_time(tmp_path: Path, broker: Broker) -> None:
    """``--mqtt`` publishes the simulated sensors on the documented sensor topics, paced by their timestamps."""
    subscriber = Subscriber(broker.port, "edge/sensors/#")
    try:
        done = edge_agent("simulate", "--mqtt", f"127.0.0.1:{broker.port}", "--duration", "2",
                          "--config", str(small_factory(tmp_path)))
        assert done.returncode == 0, done.stderr
        subscriber.wait_for(10)
        topics = {topic for topic, _ in subscriber.received}
        assert {"edge/sensors/vibration/pump-00", "edge/sensors/vibration/pump-01",
                "edge/sensors/frame/camera-00"} <= topics
        assert "published" in done.stderr
    finally:
        subscriber.close()


def test_simulate_without_a_simulator_source_says_so(tmp_path: Path) -> None:
    """A config with nothing to simulate is a config error (exit 1) saying what is missing."""
    config = yaml.safe_load(small_factory(tmp_path).read_text())
    config["sources"] = [{"kind": "zmq", "endpoint": "tcp://127.0.0.1:5999"}]
    path = tmp_path / "no-sim.yaml"
    path.write_text(yaml.safe_dump(config))
    done = edge_agent("simulate", "--out", str(tmp_path / "x.mcap"), "--config", str(path))
    assert done.returncode == 1 and "no source of kind 'simulator'" in done.stderr


def test_the_readme_walk_from_broker_to_alerts(tmp_path: Path, broker: Broker) -> None:
    """README, "Running it for real": the shipped quick-start config runs the agent on a broker, ``simulate``
    publishes the demo's factory, and alerts arrive on the event topics an operator's ``tail`` follows."""
    config = yaml.safe_load((REPO / "config" / "mqtt-quickstart.yaml").read_text())
    config["state_dir"] = str(tmp_path / "state")
    for connection in (*config["sources"], *config["sinks"]):
        if connection["kind"] == "mqtt":
            connection["port"] = broker.port
    config["tasks"]["quality"]["model"] = str(REPO / "models" / "quality")
    alerts = Subscriber(broker.port, "edge/quickstart/events/#")
    started = time.monotonic()  # the walk's steps, apart from the install: agent up, sensors on, first alert
    agent = RunningAgent(config)
    simulate = subprocess.Popen([sys.executable, "-m", "agent.cli", "simulate", "--mqtt", f"127.0.0.1:{broker.port}",
                                 "--duration", "20"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    try:
        wait_until(lambda: any(json.loads(payload)["severity"] == "alarm" for _, payload in alerts.received),
                   timeout=120)
        first_alert_s = time.monotonic() - started
        _, stderr = simulate.communicate(timeout=180)
        assert simulate.returncode == 0, stderr
    finally:
        simulate.kill()
        simulate.wait(10)
        agent.stop()
        alerts.close()
    print(f"README walk: first alert {first_alert_s:.1f} s after the agent started")
    assert first_alert_s < 120, "the README promises the first alert within two minutes"

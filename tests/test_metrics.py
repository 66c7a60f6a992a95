"""The Prometheus endpoint: a running agent's counters as scraped, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from agent.config import parse_config
from agent.daemon import Agent
from agent.testing import RunningAgent, wait_until, zmq_socket
from sensors.errors import ConfigError
from sensors.wire import encode
from tests.conftest import agent_config, free_port, vibration_chunk, write_energy_model

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "edge-agent.json"


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """An agent fed 6 loud chunks by fan-1 over ZeroMQ, scraped once its 6 windows were processed."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    inbound, port = free_port(), free_port()
    config = agent_config(tmp_path / "state", write_energy_model(tmp_path / "model"),
                          [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{inbound}", "socket": "pull"}],
                          [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
                          metrics={"enabled": True, "port": port})
    running = RunningAgent(config)
    try:
        with zmq_socket(zmq.PUSH, f"tcp://127.0.0.1:{inbound}") as push:
            for seq in range(6):
                push.send(encode(vibration_chunk("fan-1", seq, amplitude=2.0)))
            push.send(b"not a sensor message")
            wait_until(lambda: scrape(port).get("edge_agent_task_items_total", {}).get((("task", "probe"),)) == 6,
                       timeout=30, message="the probe task did not process 6 windows")
            return scrape(port)
    finally:
        running.stop()


def test_counters_match_what_the_agent_was_sent(scraped: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> None:
    assert scraped["edge_agent_messages_received_total"][(("sensor", "fan-1"),)] == 6
    assert scraped["edge_agent_undecodable_total"][()] == 1
    assert scraped["edge_agent_sensor_online"][(("sensor", "fan-1"),)] == 1
    latency_count = next(value for labels, value in scraped["edge_agent_task_latency_seconds_count"].items()
                         if ("task", "probe") in labels)
    assert latency_count == 6
    events = scraped["edge_agent_events_total"]
    assert events[(("severity", "alarm"), ("task", "probe"), ("type", "energy_high"))] >= 1
    assert scraped["edge_agent_queue_depth"][(("task", "probe"),)] == 0


def test_every_dashboard_query_names_exported_metrics(
        scraped: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> None:
    """Each panel's PromQL names only metrics the agent really exports (a typo would chart nothing).
    Outbox metrics come from an MQTT sink, absent in the scraped agent: they are checked by name in the code."""
    from agent import metrics

    exported = set(scraped) | {name.removesuffix("_total") for name in scraped}
    source = Path(metrics.__file__).read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bedge_agent_[a-z_]+", target["expr"])}
    assert len(used) >= 12
    for name in used:
        assert name in exported or f'"{name}"' in source, f"{name}: no such metric"


def test_every_metric_is_documented() -> None:
    from agent import metrics

    names = set(re.findall(r'"(edge_agent_[a-z_]+)"', Path(metrics.__file__).read_text()))
    documented = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    assert len(names) >= 15
    assert {name for name in names if f"`{name}`" not in documented} == set()


def test_off_by_default_and_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "state", write_energy_model(tmp_path / "model"),
                          [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}", "socket": "pull"}],
                          [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}])
    assert parse_config(config).metrics.enabled is False
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config["metrics"] = {"enabled": True, "port": taken.getsockname()[1]}
        agent = Agent(parse_config(config))
        try:
            with pytest.raises(ConfigError, match=r"metrics\.port"):
                agent.start()
        finally:
            agent.stop()

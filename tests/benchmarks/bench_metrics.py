"""The Prometheus endpoint's cost: one scrape of an agent with 50 sensors, as a share of a core at a 15 s interval.

The scrape renders the collector's metrics (per sensor, task, event type, sink) over HTTP; its CPU
time per scrape divided by the scrape interval is the share of a core the endpoint costs
(target: under 1 % at 15 s with 50 sensors, issue 14).
"""

from __future__ import annotations

import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.daemon import Agent
from tests.conftest import agent_config, free_port, write_energy_model

SENSORS = 50
SCRAPES = 200
INTERVAL_S = 15.0


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        port = free_port()
        config = agent_config(tmp / "state", write_energy_model(tmp / "model"),
                              [{"kind": "zmq", "endpoint": f"tcp://127.0.0.1:{free_port()}", "socket": "pull"}],
                              [{"kind": "jsonl", "path": "events.jsonl"}], metrics={"enabled": True, "port": port})
        agent = Agent(parse_config(config))
        agent.start()
        try:
            with agent.stats.lock:
                for index in range(SENSORS):
                    entry = agent.stats.sensor(f"pump-{index:03d}")
                    entry.received, entry.gaps = 1000 + index, index % 3
            for index in range(SENSORS):
                agent.event_counts.record({"task": "probe", "type": "health", "severity": "info",
                                           "sensor": f"pump-{index:03d}", "score": 0.1})
            size = len(_scrape(port))
            started_cpu, started = time.process_time(), time.perf_counter()
            for _ in range(SCRAPES):
                _scrape(port)
            cpu_s = (time.process_time() - started_cpu) / SCRAPES  # server and client: both in this process
            wall_s = (time.perf_counter() - started) / SCRAPES
        finally:
            agent.stop()
    share = cpu_s / INTERVAL_S
    print(f"metrics scrape, {SENSORS} sensors: {size} bytes, {cpu_s * 1e3:.2f} ms CPU per scrape "
          f"(client included), {wall_s * 1e3:.2f} ms wall; at one scrape per {INTERVAL_S:.0f} s: "
          f"{share * 100:.3f} % of a core (target < 1 %)")
    return {"sensors": SENSORS, "bytes": size, "cpu_ms_per_scrape": cpu_s * 1e3, "core_share_at_15s": share}


def _scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return bytes(response.read())

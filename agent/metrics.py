"""The Prometheus endpoint (``metrics:``, off by default): the agent's counters, read at each scrape.

Nothing is counted twice: the collector reads the same stats as the status message (per sensor,
per task), the queues, the sinks' outbox and connection, and the events the agent emitted, when
Prometheus scrapes; the hot path only keeps the counters it already had. Metric names follow the
Prometheus conventions (``edge_agent_`` prefix, ``_total`` counters, base units); docs/metrics.md
lists them and ``deploy/grafana/edge-agent.json`` charts them.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from pydantic import Field

from agent.stats import LATENCY_BUCKETS
from sensors.errors import ConfigError
from sensors.settings import Strict

if TYPE_CHECKING:
    from agent.daemon import Agent

HEALTH_TYPES = frozenset({"health"})  # events whose score is a machine's or station's current health


class MetricsConfig(Strict):
    """The Prometheus scrape endpoint."""

    enabled: bool = Field(default=False, description="serve /metrics for Prometheus")
    host: str = Field(default="127.0.0.1", description="address to bind; 0.0.0.0 exposes it to the network")
    port: int = Field(default=9464, ge=1, le=65535, description="TCP port")


class EventCounts:
    """Events emitted per task, type and severity, and the last health score per task and sensor (bounded)."""

    def __init__(self, max_sensors: int) -> None:
        self.lock = threading.Lock()
        self.events: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.health: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self.max_sensors = max_sensors

    def record(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events[(event["task"], event["type"], event["severity"])] += 1
            if event["type"] in HEALTH_TYPES and isinstance(event.get("score"), (int, float)):
                key = (event["task"], event["sensor"])
                self.health[key] = float(event["score"])
                self.health.move_to_end(key)
                while len(self.health) > self.max_sensors:
                    self.health.popitem(last=False)


def _counter(name: str, doc: str, labels: list[str], values: Iterator[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: Iterator[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


SENSOR_COUNTERS = {  # SensorStats field -> (metric, help)
    "received": ("edge_agent_messages_received_total", "sensor messages received"),
    "rejected": ("edge_agent_input_rejected_total", "sensor input rejected (a clear reason each)"),
    "gaps": ("edge_agent_sequence_gaps_total", "sequence gaps: messages missing before the next"),
    "missing": ("edge_agent_messages_missing_total", "messages missing in those gaps"),
    "dropped": ("edge_agent_messages_dropped_total", "messages dropped by a full task queue"),
}
TASK_COUNTERS = {
    "processed": ("edge_agent_task_items_total", "frames and windows a task processed"),
    "errors": ("edge_agent_task_errors_total", "task calls that failed on their input"),
    "rejected": ("edge_agent_task_rejected_total", "task inputs rejected"),
}


class AgentCollector(Collector):
    """Reads the running agent's counters when Prometheus scrapes."""

    def __init__(self, agent: Agent, events: EventCounts) -> None:
        self.agent = agent
        self.event_counts = events

    def collect(self) -> Iterator[Any]:
        yield from self._sensor_and_task_metrics()
        yield from self._event_metrics()
        yield from self._delivery_metrics()

    def _sensor_and_task_metrics(self) -> Iterator[Any]:
        stats = self.agent.stats
        with stats.lock:
            sensors = {name: (vars(entry).copy()) for name, entry in stats.sensors.items()}
            tasks = {name: (vars(task).copy(), list(task.latency_counts)) for name, task in stats.tasks.items()}
            undecodable = stats.undecodable
        for field_name, (metric, doc) in SENSOR_COUNTERS.items():
            yield _counter(metric, doc, ["sensor"], (([name], entry[field_name]) for name, entry in sensors.items()))
        yield _gauge("edge_agent_sensor_online", "1 while the sensor sends, 0 once it fell silent", ["sensor"],
                     (([name], float(entry["online"])) for name, entry in sensors.items()))
        yield _counter("edge_agent_undecodable_total", "messages that did not decode far enough to name a sensor",
                       [], iter([([], undecodable)]))
        for field_name, (metric, doc) in TASK_COUNTERS.items():
            yield _counter(metric, doc, ["task"], (([name], task[field_name]) for name, (task, _) in tasks.items()))
        latency = HistogramMetricFamily("edge_agent_task_latency_seconds",
                                        "time from an item reaching its task to its events", labels=["task", "model"])
        for name, (task, counts) in tasks.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([name, self._models(name)], buckets, task["latency_sum_s"])
        yield latency
        queues = {name: len(worker.queue) for name, worker in self.agent.workers.items()}
        yield _gauge("edge_agent_queue_depth", "items waiting in a task's queue", ["task"],
                     (([name], depth) for name, depth in queues.items()))

    def _models(self, task: str) -> str:
        worker = self.agent.workers.get(task)
        return ",".join(f"{ref.name}@{ref.version}" for ref in worker.task.models()) if worker else ""

    def _event_metrics(self) -> Iterator[Any]:
        with self.event_counts.lock:
            events = dict(self.event_counts.events)
            health = dict(self.event_counts.health)
        yield _counter("edge_agent_events_total", "events emitted", ["task", "type", "severity"],
                       ((list(key), count) for key, count in events.items()))
        yield _gauge("edge_agent_health_score", "the last health score of each machine or station (0 = healthy)",
                     ["task", "sensor"], ((list(key), score) for key, score in health.items()))

    def _delivery_metrics(self) -> Iterator[Any]:
        sinks = [(sink.name, sink.stats()) for sink in self.agent.sinks]
        delivering = [(name, stats) for name, stats in sinks if "pending" in stats]
        yield _gauge("edge_agent_outbox_pending", "events waiting in the outbox for the broker", ["sink"],
                     (([name], stats["pending"]) for name, stats in delivering))
        yield _counter("edge_agent_outbox_delivered_total", "events the broker acknowledged", ["sink"],
                       (([name], stats.get("delivered", 0)) for name, stats in delivering))
        yield _counter("edge_agent_outbox_evicted_total", "events dropped by the outbox's size or age limits",
                       ["sink"], (([name], stats.get("evicted", 0) + stats.get("expired", 0))
                                  for name, stats in delivering))
        yield _gauge("edge_agent_broker_connected", "1 while the sink is connected to its broker", ["sink"],
                     (([name], float(bool(stats.get("connected")))) for name, stats in delivering))
        failing_over = [(name, stats) for name, stats in delivering if "broker" in stats]
        yield _gauge("edge_agent_broker_current", "1 for the broker the sink connects to (of its 'brokers')",
                     ["sink", "broker"], (([name, stats["broker"]], 1.0) for name, stats in failing_over))
        yield _counter("edge_agent_broker_failovers_total", "moves to the next broker of the sink's 'brokers'",
                       ["sink"], (([name], stats.get("failovers", 0)) for name, stats in failing_over))
        yield _gauge("edge_agent_storage_degraded", "1 while the outbox cannot write to disk", ["sink"],
                     (([name], float(bool(stats.get("storage_degraded")))) for name, stats in delivering))


class MetricsServer:
    """The HTTP endpoint, on its own registry (no process-wide default collectors to leak between agents)."""

    def __init__(self, agent: Agent, config: MetricsConfig, events: EventCounts) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(agent, events))
        try:
            self.server, self.thread = start_http_server(config.port, config.host, registry=self.registry)
        except OSError as error:
            raise ConfigError(f"metrics: cannot serve on {config.host}:{config.port} ({error.strerror}); "
                              "choose another metrics.port or stop what holds it") from error

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

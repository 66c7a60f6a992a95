"""The daemon: starts sources -> pipeline -> sinks in order, supervises them, reloads, stops cleanly.

Shutdown is one ordered path: every component registers a stop function as it
starts, and :meth:`Agent.stop` runs them in reverse order, each with a deadline.
SIGTERM and SIGINT take that path; SIGHUP reloads configuration and models
without losing queued data (a config that fails validation is refused).
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import zmq

from agent import __version__, systemd
from agent.config import AgentConfig, load_config
from agent.events import EventDraft, SensorOffline, SensorOnline, dumps, finalize
from agent.metrics import EventCounts, MetricsServer
from agent.pipeline import Dispatcher, RejectionReporter, TaskWorker
from agent.quarantine import Quarantine
from agent.sinks import Outgoing, Sink, SinkEnv, make_sink
from agent.standby import Standby
from agent.stats import Stats
from agent.tasks import task_types
from agent.tasks.base import Task, TaskContext
from models.runtime import load_model, under_state_dir
from sensors.sources import Source, SourceEnv, make_source

log = structlog.get_logger(__name__)
EXIT_MEMORY = 75  # EX_TEMPFAIL: systemd restarts us, the outbox and learned state are on disk
EXIT_RESTARTS = 70
WORKER_RESTART_LIMIT = 5  # per minute, then the process exits and systemd takes over
# a sensor that sent this many valid messages over this long was healthy: its silence is worth an event
HEALTHY_MESSAGES = 10
HEALTHY_SPAN_S = 5.0


class Lifecycle:
    """Components in start order; stopped in reverse order with a deadline each."""

    def __init__(self) -> None:
        self.components: list[tuple[str, Callable[[], Any]]] = []

    def register(self, name: str, stop: Callable[[], Any]) -> None:
        self.components.append((name, stop))

    def stop_all(self, deadline_s: float) -> None:
        """Stop everything within ``deadline_s`` overall (each component gets what is left, at least 1 s)."""
        deadline = time.monotonic() + deadline_s
        while self.components:
            name, stop = self.components.pop()
            thread = threading.Thread(target=_quietly, args=(name, stop), name=f"stop-{name}", daemon=True)
            thread.start()
            thread.join(max(1.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("component did not stop in time", component=name, deadline_s=deadline_s)


def _quietly(name: str, stop: Callable[[], Any]) -> None:
    try:
        stop()
    except Exception:
        log.exception("component failed to stop cleanly", component=name)


class Agent:
    """One running agent: build with a config, ``start()``, ``run()`` until stopped."""

    def __init__(self, config: AgentConfig, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.stats = Stats(config.max_sensors)
        self.lifecycle = Lifecycle()
        self.sinks: list[Sink] = []
        self.sources: list[Source] = []
        self.workers: dict[str, TaskWorker] = {}
        self.standby: Standby | None = None
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.exit_code = 0
        self.loop_beat = time.monotonic()
        self.restart_times: list[float] = []
        self.zmq_context: zmq.Context[Any] = zmq.Context()
        self.reporter = RejectionReporter(self.emit, max_sensors=config.max_sensors)
        self.quarantine = Quarantine(self.emit, config.quarantine, config.max_sensors)
        self.dispatcher = Dispatcher(self.stats, config.max_payload_bytes, self.reporter, self.quarantine)
        self.configured_sensors = configured_sensors(config)
        self.event_counts = EventCounts(config.max_sensors)
        self.metrics: MetricsServer | None = None

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open sinks (and outbox), load models, start workers, then sources; READY at the end."""
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        single_threaded_blas()
        self.lifecycle.register("zmq", lambda: self.zmq_context.term())
        self._open_sinks(config)
        for task in self._build_tasks(config):
            self._add_worker(task)
        self.lifecycle.register("tasks", self._stop_workers)
        if config.metrics.enabled:
            self.metrics = MetricsServer(self, config.metrics, self.event_counts)
            self.lifecycle.register("metrics", self.metrics.close)
            log.info("metrics endpoint serving", host=config.metrics.host, port=self.metrics.port)
        self._open_sources(config)
        self.loop_beat = time.monotonic()
        watchdog = systemd.Watchdog(self.making_progress)
        if watchdog.start():
            self.lifecycle.register("watchdog", watchdog.stop)
        systemd.ready()
        systemd.status(f"running {len(self.workers)} task(s)")
        log.info("agent started", device=config.device, version=__version__, tasks=sorted(self.workers),
                 models=self.model_versions())

    def _open_sinks(self, config: AgentConfig) -> None:
        env = SinkEnv(config.device, config.state_dir, self.zmq_context, lambda draft: self.emit("agent", draft))
        sinks = [make_sink(sink, env) for sink in config.sinks]
        self.sinks = sinks

        def close_sinks() -> None:
            for sink in sinks:
                sink.close()

        self.lifecycle.register("sinks", close_sinks)

    def _open_sources(self, config: AgentConfig) -> None:
        env = SourceEnv(config.device, self.zmq_context, config.max_payload_bytes)
        sources = [make_source(source, env) for source in config.sources]
        for source in sources:
            deliver = functools.partial(self.dispatcher.submit, wait=source.can_wait, gaps=not source.shares_streams)
            source.start(deliver)
        self.sources = sources

        def close_sources() -> None:
            for source in sources:
                source.close()

        self.lifecycle.register("sources", close_sources)
        if config.cluster.active:
            mqtt_source = next(source for source in config.sources if source.kind == "mqtt")  # checked by config
            replicated = [name for name, worker in self.workers.items() if worker.task.replicated_state]
            self.standby = Standby(config.cluster, mqtt_source, env, config.state_dir, replicated,
                                   functools.partial(self.dispatcher.submit, gaps=not mqtt_source.share_group),
                                   self.release_sensors)
            self.standby.start()
            self.lifecycle.register("standby", self.standby.close)

    def _build_tasks(self, config: AgentConfig) -> list[Task]:
        types = task_types()
        backend = under_state_dir(config.backend, config.state_dir)  # engine caches follow state_dir
        tasks = []
        for name, task_config in config.task_configs().items():
            context = TaskContext(
                device=config.device, state_dir=config.state_dir / name,
                load_model=functools.partial(load_model, config=backend), log=log.bind(task=name))
            context.state_dir.mkdir(parents=True, exist_ok=True)
            tasks.append(types[name](task_config, context))
        return tasks

    def _add_worker(self, task: Task) -> None:
        worker = TaskWorker(task, self.stats, self.emit, self.reporter, self.quarantine, self.config.max_sensors)
        self.workers[task.name] = worker
        self.dispatcher.workers = list(self.workers.values())

    def _stop_workers(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s * 0.9
        for worker in self.workers.values():
            worker.accepting = False
        for worker in self.workers.values():
            left = worker.drain(deadline)
            if left:
                log.error("stopped with items still queued", task=worker.name, left=left)
            if worker.thread.is_alive():
                # still inside a model run: closing its session under it aborts the process (ONNX Runtime
                # calls std::terminate); the process is about to exit and the OS reclaims the model
                log.error("task still busy at the drain deadline; not closed", task=worker.name)
                continue
            worker.task.close()

    # -- events ----------------------------------------------------------------------------
    def emit(self, task: str, draft: EventDraft) -> None:
        """Finish an event and hand it to every sink; a failing sink never stops the others."""
        event = finalize(draft, self.config.device, task)
        self.event_counts.record(event)
        item = Outgoing(event, dumps(event), draft.attachment)
        for sink in self.sinks:
            try:
                sink.send(item)
            except Exception:
                log.exception("sink failed to take an event", sink=sink.name, event_id=event["event_id"])

    def model_versions(self) -> dict[str, list[str]]:
        return {name: [f"{m.name}@{m.version}" for m in worker.task.models()]
                for name, worker in self.workers.items()}

    # -- run -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def run(self, duration_s: float | None = None, until_sources_finish: bool = False) -> int:
        """Supervise until stopped (signal, duration, or finite sources done); returns the exit code."""
        started = time.monotonic()
        last_stats = started
        while not self.stop_requested.wait(0.25):
            now = self.loop_beat = time.monotonic()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            self._supervise(now)
            if now - last_stats >= self.config.stats_interval_s:
                last_stats = now
                self.report_stats()
            if duration_s is not None and now - started >= duration_s:
                break
            if until_sources_finish and self.sources and all(s.finished.is_set() for s in self.sources) \
                    and all(len(w.queue) == 0 and w.busy_since is None for w in self.workers.values()):
                break
        self.stop()
        return self.exit_code

    def making_progress(self) -> bool:
        """True while the supervisor and every worker loop, none stuck inside one call (gates watchdog pings)."""
        now, limit = time.monotonic(), self.config.stuck_after_s
        return now - self.loop_beat < limit and all(
            now - w.heartbeat < limit and w.stuck_for(now) < limit and w.thread.is_alive()
            for w in self.workers.values())

    def _supervise(self, now: float) -> None:
        for worker in self.workers.values():
            if worker.ensure_running():
                self.restart_times = [t for t in self.restart_times if now - t < 60] + [now]
                if len(self.restart_times) > WORKER_RESTART_LIMIT:
                    log.error("workers keep dying; exiting for systemd to restart the agent")
                    self.exit_code = EXIT_RESTARTS
                    self.stop_requested.set()
        self._check_sensors(now)
        if self.standby is not None:
            self.standby.poll(now)
        rss_mb = current_rss_mb()
        if self.config.max_rss_mb and rss_mb > self.config.max_rss_mb:
            log.error("memory budget exceeded; exiting for a restart (nothing is lost: outbox and state "
                      "are on disk)", rss_mb=round(rss_mb), budget_mb=self.config.max_rss_mb)
            self.exit_code = EXIT_MEMORY
            self.stop_requested.set()

    def _check_sensors(self, now: float) -> None:
        """Offline and online events, only for configured sensors and ones that were healthy (not junk ids)."""
        timeout = self.config.sensor_timeout_s
        changes = []
        with self.stats.lock:
            for sensor, entry in self.stats.sensors.items():
                entry.healthy = entry.healthy or (
                    entry.received >= HEALTHY_MESSAGES and entry.first_valid is not None
                    and entry.last_seen - entry.first_valid >= min(HEALTHY_SPAN_S, timeout))
                if not (entry.healthy or sensor in self.configured_sensors):
                    continue
                silent = now - entry.last_seen > timeout
                if silent == entry.online:
                    entry.online = not silent
                    changes.append((sensor, entry.online, now - entry.last_seen))
        for sensor, online, silence in changes:
            kind = "sensor_online" if online else "sensor_offline"
            log.warning(kind, sensor=sensor)
            body = SensorOnline() if online else SensorOffline(silent_for_s=round(silence, 1))
            self.emit("agent", body.draft(sensor, time.time_ns(), "info" if online else "warning"))

    def release_sensors(self, sensors: set[str]) -> None:
        """These sensors' input went to another agent: forget their windows, task state and liveness (no
        ``sensor_offline`` for a sensor that is now another agent's)."""
        for worker in self.workers.values():
            worker.release(sensors)
        with self.stats.lock:
            for sensor in sensors:
                self.stats.sensors.pop(sensor, None)

    def busy_tasks(self) -> list[str]:
        """Tasks whose worker is still inside a call after the stop (left alone at the drain deadline)."""
        return [name for name, worker in self.workers.items() if worker.thread.is_alive()]

    def report_stats(self) -> dict[str, Any]:
        top = self.config.status_top_sensors
        snapshot = self.stats.snapshot(top, mark=True)
        quarantined = self.quarantine.quarantined()
        snapshot["quarantined"] = {"count": len(quarantined), "sensors": sorted(quarantined)[:top]}
        snapshot["queues"] = {name: len(worker.queue) for name, worker in self.workers.items()}
        snapshot["sources"] = {f"{index}-{source.name}": source.stats() for index, source in enumerate(self.sources)}
        snapshot["sinks"] = {sink.name: sink.stats() for sink in self.sinks if sink.stats()}
        if self.standby is not None:
            snapshot["standby"] = self.standby.stats()
        snapshot["models"] = self.model_versions()
        snapshot["rss_mb"] = round(current_rss_mb(), 1)
        log.info("stats", **snapshot)
        status = {"device": self.config.device, "state": "online", "version": __version__, "stats": snapshot}
        for sink in self.sinks:
            sink.send_status(status)
        return snapshot

    # -- reload and stop -------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the config and models; keep the running ones if anything fails."""
        if self.config_path is None:
            return False
        systemd.reloading()
        try:
            config = load_config(self.config_path)
            tasks = {task.name: task for task in self._build_tasks(config)}
        except Exception as error:  # a bad config or model must never take the running agent down
            log.error("reload refused; keeping the running configuration", error=str(error))
            systemd.ready()
            return False
        for name, task in tasks.items():
            if name in self.workers:
                self.workers[name].swap(task).close()
            else:
                self._add_worker(task)
        for name in set(self.workers) - set(tasks):
            self.workers[name].accepting = False
            log.warning("task removed by reload; it stops taking input", task=name)
        self.quarantine.config = config.quarantine
        self.quarantine.lift_all()  # the operator may have fixed the sensor or the task
        self.configured_sensors = configured_sensors(config)
        kept = ("device", "state_dir", "sources", "sinks")
        if any(getattr(config, key) != getattr(self.config, key) for key in kept):
            log.warning("device, state_dir, sources and sinks changes take effect at the next restart")
        self.config = config.model_copy(update={key: getattr(self.config, key) for key in kept})
        systemd.ready()
        log.info("configuration reloaded", models=self.model_versions())
        return True

    def stop(self) -> None:
        systemd.stopping()
        log.info("agent stopping", deadline_s=self.config.drain_timeout_s)
        self.lifecycle.stop_all(self.config.drain_timeout_s)
        log.info("agent stopped", **{"exit_code": self.exit_code})


def configured_sensors(config: AgentConfig) -> frozenset[str]:
    """The sensor ids that task configs name exactly (not by a wildcard pattern)."""
    return frozenset(pattern for task in config.task_configs().values() for pattern in task.sensors
                     if not any(char in pattern for char in "*?["))


def current_rss_mb() -> float:
    """Resident set size of this process, in MiB."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def single_threaded_blas() -> None:
    """One BLAS thread per task worker: the workers already run side by side, and idle OpenBLAS threads spin.

    Measured with the quality task's station normal (``make bench``): its nearest-neighbour search after each
    ONNX run added 72 ms a frame with OpenBLAS's default threads (their spinning slowed the next ONNX run)
    and 23 ms with one.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")

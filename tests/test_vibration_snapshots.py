"""Snapshot sensors (a burst every few minutes): one window per burst, the task's mode, config warnings."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import structlog
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import EventDraft
from agent.pipeline import TaskWorker
from agent.stats import Stats
from agent.tasks.base import TaskContext
from agent.tasks.vibration.task import VibrationConfig, VibrationTask
from agent.testing import RunningAgent, publisher, stop_client, subscriber
from agent.windowing import Window, Windower
from models.runtime import load_model
from sensors import topics
from sensors.simulate.vibration import Acquisition, MachineSpec, RunSpec, VibrationSimulator, run_to_failure
from sensors.wire import Kind, SensorMessage, encode
from tests.cli_runner import cli, config_dict
from tests.conftest import Broker

FS = 8000.0
START_NS = 10**18
INTERVAL_S = 600.0
MACHINE = MachineSpec(shaft_hz=31.0, resonance_hz=2600.0, dropouts_per_hour=0.0, spikes_per_s=0.0)


def burst(seq: int, start_s: float, chunks: int = 4, samples: int = 2000) -> list[SensorMessage]:
    """One burst of ``chunks`` contiguous chunks from ``start_s``; sample values count up from the burst's start."""
    return [SensorMessage("pump-1", Kind.VIBRATION, seq + i, START_NS + round((start_s + i * samples / FS) * 1e9),
                          np.arange(i * samples, (i + 1) * samples, dtype=np.float32)[:, None], FS)
            for i in range(chunks)]


def feed(windower: Windower, messages: list[SensorMessage]) -> tuple[list[Window], list[str]]:
    windows, breaks = [], []
    for message in messages:
        cut, stream_break = windower.feed(message)
        windows += cut
        breaks += [stream_break.reason] if stream_break else []
    return windows, breaks


def snapshot_stream(count: int, fault: bool = False) -> list[SensorMessage]:
    """``count`` simulated 1 s snapshots every 10 min, in 0.25 s chunks with consecutive seq numbers."""
    acquisition = Acquisition("snapshots", 1.0, INTERVAL_S)
    duration = count * INTERVAL_S
    run = (run_to_failure("outer_race", 0.4 * duration, duration, acquisition=acquisition, sample_rate=FS) if fault
           else RunSpec(duration_s=duration, acquisition=acquisition, sample_rate=FS))
    return list(VibrationSimulator(MACHINE, run, seed=5).messages("pump-1", START_NS, chunk_s=0.25))


class TestSnapshotWindower:
    def test_each_burst_is_one_window_from_its_start_whatever_the_hop(self) -> None:
        """Bursts of 1 s every 10 min, window 0.5 s: one window per burst, at its first sample and time, even
        with the hop of the old example config (1200 s), which in continuous mode cuts none of them."""
        bursts = [burst(4 * k, k * INTERVAL_S) for k in range(5)]
        windows, breaks = feed(Windower(0.5, 1200.0, snapshot=True), [m for b in bursts for m in b])
        assert breaks == []
        assert [w.start_ns for w in windows] == [b[0].timestamp_ns for b in bursts]
        assert all(len(w.samples) == 4000 and w.samples[0, 0] == 0 for w in windows)
        assert [w.index for w in windows] == list(range(5))
        continuous, _ = feed(Windower(0.5, 1200.0), [m for b in bursts for m in b])
        assert len(continuous) <= 1

    def test_a_burst_shorter_than_the_window_is_discarded_and_reported(self) -> None:
        """A burst that ends before its window is full gives no window; the next burst says why."""
        messages = burst(0, 0.0, chunks=1) + burst(1, INTERVAL_S)
        windows, breaks = feed(Windower(0.5, 0.5, snapshot=True), messages)
        assert [w.start_ns for w in windows] == [messages[1].timestamp_ns]
        assert len(breaks) == 1 and "shorter than the window" in breaks[0]

    def test_a_gap_inside_a_burst_waits_for_the_next_burst(self) -> None:
        """Chunks lost inside a burst: no window from the burst's middle; the next burst gives its window."""
        first, second = burst(0, 0.0, chunks=6), burst(6, INTERVAL_S)
        windows, breaks = feed(Windower(0.5, 0.5, reorder_chunks=0, snapshot=True), first[:1] + first[3:] + second)
        assert [w.start_ns for w in windows] == [second[0].timestamp_ns]
        assert any("sequence gap" in reason for reason in breaks)

    def test_chunks_lost_between_bursts_do_not_cost_the_next_window(self) -> None:
        """The end of one burst lost (a sequence gap) and then a silence: the next burst starts a window."""
        first, second = burst(0, 0.0), burst(4, INTERVAL_S)
        windows, _ = feed(Windower(0.5, 0.5, reorder_chunks=0, snapshot=True), first[:2] + second)
        assert [w.start_ns for w in windows] == [first[0].timestamp_ns, second[0].timestamp_ns]

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 30), st.integers(0, 12), st.booleans())
    def test_redelivered_input_cuts_the_windows_of_an_uninterrupted_run(self, fault_at: int, back: int,
                                                                          restarted: bool) -> None:
        """Input delivered again from the first unacknowledged chunk (or further back): to the same windower the
        windows cut are those of a run without the fault, at the same times. A new windower (an agent restart)
        loses none of them either, but when the input starts in the middle of a burst it cannot know and takes
        the rest of that burst as one (one window more, documented in docs/wire-format.md)."""
        stream = [m for k in range(8) for m in burst(4 * k, k * INTERVAL_S)]
        acked: set[int] = set()

        def starts(windower: Windower, messages: list[SensorMessage]) -> set[int]:
            found = set()
            for message in messages:
                found |= {w.start_ns for w in windower.feed(
                    dataclasses.replace(message, ack=functools.partial(acked.add, message.seq)))[0]}
                windower.acknowledge()
            return found

        reference = starts(Windower(0.5, 1200.0, snapshot=True), stream)
        acked.clear()
        windower = Windower(0.5, 1200.0, snapshot=True)
        before = starts(windower, stream[:fault_at])
        first_unacked = min(set(range(fault_at)) - acked, default=fault_at)
        again = stream[max(0, first_unacked - back):]
        after = starts(Windower(0.5, 1200.0, snapshot=True) if restarted else windower, again)
        cut = before | after
        starts_mid_burst = bool(again) and again[0].seq % 4 != 0
        if restarted and starts_mid_burst:
            assert reference <= cut and len(cut - reference) <= 1
        else:
            assert cut == reference

    def test_a_burst_in_progress_survives_input_delivered_again_from_before(self) -> None:
        """A restored broker sends an older burst again in the middle of a burst; when the live stream goes on,
        that burst's window starts at its own first sample, as without the interruption."""
        bursts = [burst(4 * k, k * INTERVAL_S) for k in range(3)]
        live = bursts[0] + bursts[1] + bursts[2][:1]
        windows, _ = feed(Windower(0.5, 1200.0, snapshot=True), live + bursts[1] + bursts[2][1:])
        assert sorted({w.start_ns for w in windows}) == [b[0].timestamp_ns for b in bursts]

    def test_every_chunk_is_acknowledged_once_its_burst_is_done(self) -> None:
        """The window's chunks and the rest of the burst are released; nothing waits for a hop that never comes."""
        acked: list[int] = []
        windower = Windower(0.5, 1200.0, snapshot=True)
        for message in burst(0, 0.0) + burst(4, INTERVAL_S):
            windower.feed(dataclasses.replace(message, ack=functools.partial(acked.append, message.seq)))
            windower.acknowledge()
        assert acked == list(range(8))


def make_task(state_dir: Path, **config: object) -> VibrationTask:
    settings = {"baseline_windows": 20, "window_s": 1.0, "hop_s": 1200.0, "shaft_hz": None, "mode": "snapshot",
                **config}
    return VibrationTask(VibrationConfig(**settings), TaskContext("edge-1", state_dir, load_model,
                                                                 structlog.get_logger()))


class TestSnapshotTask:
    def test_mode_per_machine(self, tmp_path: Path) -> None:
        """The task's mode, overridden per machine pattern, decides which streams are snapshots."""
        task = make_task(tmp_path, mode="continuous", machines={"pump-*": {"mode": "snapshot"}})
        assert task.snapshot_stream("pump-1") and not task.snapshot_stream("fan-1")

    def test_through_the_worker_a_snapshot_machine_learns_and_raises(self, tmp_path: Path) -> None:
        """The agent's task worker on simulated 10-min snapshots: the baseline is ready at the 20th snapshot,
        the fault is raised, and anomaly_updated comes at most once per update_windows snapshots (not once
        per snapshot, though each is far past update_interval_s)."""
        emitted: list[EventDraft] = []
        stream = snapshot_stream(60, fault=True)
        worker = TaskWorker(make_task(tmp_path, update_windows=4), Stats(), lambda task, draft: emitted.append(draft),
                            lambda *a, **k: None)
        for message in stream:
            worker.offer(message, wait=math.inf)
        assert worker.drain(time.monotonic() + 60) == 0  # every snapshot processed
        times = [m.timestamp_ns for m in stream]
        snapshot_starts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 10**9]
        ready = next(d for d in emitted if d.type == "baseline_ready")
        assert ready.source_time_ns == snapshot_starts[19] and ready.body["windows"] == 20
        assert ready.body["span_s"] == 19 * INTERVAL_S  # the baseline's length in time: 20 snapshots 10 min apart
        assert next(d for d in emitted if d.type == "baseline_learning").body["mode"] == "snapshot"
        raised = next(d for d in emitted if d.type == "anomaly_raised")
        assert raised.source_time_ns >= START_NS + 0.4 * 60 * INTERVAL_S * 1e9
        updates = [snapshot_starts.index(d.source_time_ns) for d in emitted if d.type == "anomaly_updated"]
        alarm_on = [snapshot_starts.index(raised.source_time_ns), *updates]
        assert updates and min(np.diff(alarm_on)) >= 4


class TestThroughMosquitto:
    def test_snapshots_published_over_mqtt_make_a_baseline_in_bursts(self, tmp_path: Path, broker: Broker) -> None:
        """The daemon, configured `mode: snapshot` with the old example's hop_s, reads 12 bursts published to a
        real Mosquitto and is ready after 10 of them, its baseline spanning 9 burst intervals."""
        mqtt = {"host": "127.0.0.1", "port": broker.port}
        config = config_dict(tmp_path / "state", sources=[{"kind": "mqtt", **mqtt}], sinks=[{"kind": "mqtt", **mqtt}],
                             tasks={"vibration": {"scorer": "mahalanobis", "mode": "snapshot", "window_s": 1.0,
                                                  "hop_s": 1200.0, "baseline_windows": 10}})
        running = RunningAgent(config)
        client, received = subscriber(broker.port, "edge/line3/events/vibration/baseline_ready")
        sensors = publisher(broker.port)
        try:
            broker.wait_for_subscription("edge/sensors/+/+")
            stream = snapshot_stream(12)
            for message in stream:
                sensors.publish(topics.sensor_topic("edge", Kind.VIBRATION, "pump-1"), encode(message), qos=1)
            event = json.loads(received.get(timeout=30).payload)
        finally:
            stop_client(client)
            stop_client(sensors)
            running.stop()
        assert event["sensor"] == "pump-1" and event["body"]["windows"] == 10
        assert event["body"]["span_s"] == 9 * INTERVAL_S


class TestValidateConfig:
    def test_a_far_hop_on_a_continuous_stream_is_warned_about(self, tmp_path: Path) -> None:
        """hop_s 1200 with 1 s windows in continuous mode validates, with a warning naming `mode: snapshot`."""
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config_dict(tmp_path / "state", tasks={"vibration": {
            "scorer": "mahalanobis", "window_s": 1.0, "hop_s": 1200.0}})))
        result = cli("validate-config", path)
        assert result.returncode == 0, result.stderr
        assert "warning: vibration: hop_s (1200) is 1200 x window_s" in result.stderr
        assert "mode: snapshot" in result.stderr

    @pytest.mark.parametrize("task", [{"mode": "snapshot", "hop_s": 1200.0}, {"window_s": 1.0, "hop_s": 2.0}])
    def test_snapshot_mode_or_a_near_hop_is_not_warned_about(self, task: dict[str, object]) -> None:
        """Snapshot mode ignores hop_s; a hop of a few windows is an ordinary continuous setting."""
        assert VibrationConfig(**task, bearing={}).warnings() == []

"""Benchmark: numpy vibration features vs tsfresh, and the vibration task's CPU use on a 20-sensor fleet.

    python -m tests.benchmarks.bench_vibration

1. Speed ratio: the same 1 s windows at 20 kHz; numpy computes *all* its features one window at
   a time, as the agent does; tsfresh computes only the features both compute
   (:func:`models.vibration.select_features.tsfresh_equivalents`).  Target: >= 100x.
2. CPU per wall second of signal: 20 sensors x 20 kHz continuous, pre-simulated and wire-encoded;
   timed: decode -> windowing -> VibrationTask.process, once every machine has learnt its baseline
   (learning is timed separately).  Target: < 0.5 core.
Not a pytest test: timings on a shared machine are reported, not asserted.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agent.tasks.base import TaskContext
from agent.tasks.vibration.task import VibrationConfig, VibrationTask
from agent.windowing import Windower
from models.runtime import load_model
from models.vibration.runtime.features import extract
from sensors.simulate.vibration import VibrationSimulator, make_fleet, run_to_failure
from sensors.wire import decode, encode

RATE = 20_000.0


def feature_speed(windows: int = 20, rounds: int = 5, seed: int = 0) -> dict[str, float]:
    """Seconds per window for numpy (all features, best of rounds) and tsfresh (shared features, once)."""
    from models.vibration.select_features import tsfresh_equivalents

    machine = make_fleet(1, seed=seed, sample_rate=RATE)[0]
    run = run_to_failure("inner_race", windows / 2, windows, sample_rate=RATE)
    data = np.stack([block.samples for block in VibrationSimulator(machine, run, seed=seed).blocks(1.0)])
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for window in data:
            extract(window, RATE)
        best = min(best, (time.process_time() - started) / len(data))
    started = time.process_time()
    tsfresh_equivalents(data[:, :, 0], RATE)
    reference = (time.process_time() - started) / len(data)
    return {"numpy_s_per_window": best, "tsfresh_s_per_window": reference, "speed_ratio": reference / best}


def fleet_cpu(sensors: int = 20, seconds: float = 30.0, baseline_windows: int = 20, seed: int = 1,
              scorer: str = "mahalanobis") -> dict[str, float]:
    """CPU seconds per second of signal for the vibration task on ``sensors`` continuous streams."""
    fleet = make_fleet(sensors, seed=seed, sample_rate=RATE)
    total = baseline_windows + seconds
    streams = []
    for index, machine in enumerate(fleet):
        run = run_to_failure("outer_race", total * 0.6, total, sample_rate=RATE)
        simulator = VibrationSimulator(machine, run, seed=seed + index)
        streams.append([encode(m) for m in simulator.messages(machine.machine_id, 10**18, chunk_s=0.1)])
    chunks_per_s = 10
    with tempfile.TemporaryDirectory() as state_dir:
        context = TaskContext("bench", Path(state_dir), load_model, structlog.get_logger())
        config = VibrationConfig(scorer=scorer, baseline_windows=baseline_windows, health_interval_s=1.0)
        task = VibrationTask(config, context)
        windowers = [Windower(config.window_s, config.hop_s) for _ in fleet]

        def play(first: int, last: int) -> float:
            started = time.process_time()
            for chunk in range(first, last):  # interleaved as live streams arrive
                for windower, stream in zip(windowers, streams, strict=True):
                    for window in windower.feed(decode(stream[chunk]))[0]:
                        task.process(window)
                if chunk % chunks_per_s == 0:
                    task.tick(time.time_ns())
            return time.process_time() - started

        learning_cpu = play(0, baseline_windows * chunks_per_s)
        monitoring_cpu = play(baseline_windows * chunks_per_s, int(total * chunks_per_s))
        task.close()
    return {"sensors": sensors, "seconds_of_signal": seconds, "cores_monitoring": monitoring_cpu / seconds,
            "cores_learning": learning_cpu / baseline_windows}


def run(windows: int = 20, sensors: int = 20, seconds: float = 30.0) -> dict[str, Any]:
    """Both measurements; prints and returns them."""
    speed = feature_speed(windows)
    print(f"numpy features vs tsfresh on the same {windows} windows (1 s, 20 kHz): "
          f"{speed['numpy_s_per_window'] * 1e3:.2f} ms vs {speed['tsfresh_s_per_window'] * 1e3:.1f} ms per "
          f"window -> {speed['speed_ratio']:.0f}x (target >= 100x)", flush=True)
    cpu = fleet_cpu(sensors, seconds)
    print(f"vibration task, {sensors} sensors x 20 kHz continuous, {seconds:.0f} s of signal: "
          f"{cpu['cores_monitoring']:.3f} core while monitoring (target < 0.5), "
          f"{cpu['cores_learning']:.3f} core while learning the baselines", flush=True)
    return {**speed, **cpu}


if __name__ == "__main__":
    run()

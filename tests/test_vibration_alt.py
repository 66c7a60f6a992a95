"""The independent vibration generator: fault lines in the envelope spectrum, determinism, snapshot timing, config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from agent.tasks.vibration.config import VibrationConfig
from agent.windowing import Windower
from sensors.bearing import BearingGeometry
from sensors.simulate.vibration_alt import (
    DAY_S,
    AltFault,
    AltFleet,
    AltSimulator,
    _State,
    agent_machines,
    alt_fleet,
    ground_truth,
)

FLEET = AltFleet(machines=4, faulty=3, days=3.0)


def envelope_spectrum(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.fft.rfftfreq(len(x), 1 / fs)
    spectrum = np.fft.rfft(x - x.mean())
    spectrum[(freqs < 1000) | (freqs > 9500)] = 0
    envelope = np.abs(signal.hilbert(np.fft.irfft(spectrum, len(x))))
    return freqs, np.abs(np.fft.rfft(envelope - envelope.mean()))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_fault_frequency_stands_out_in_the_envelope_spectrum(index: int) -> None:
    machine = alt_fleet(FLEET)[index]
    assert machine.fault is not None
    simulator = AltSimulator(machine, FLEET, seed=5)
    life = machine.fault.onset_s + 0.9 * (machine.fault.failure_s - machine.fault.onset_s)
    x = simulator.render(life, 1.0, np.random.default_rng(0), _State())[:, 0]
    orders = machine.bearing.orders()
    order = {"outer_race": orders["bpfo"], "inner_race": orders["bpfi"], "ball": 2 * orders["bsf"]}[machine.fault.kind]
    speed = float(np.mean(simulator.speed(life + np.arange(20_000) / FLEET.sample_rate)))
    freqs, amplitude = envelope_spectrum(x, FLEET.sample_rate)
    near = np.abs(freqs - order * speed) <= 0.015 * order * speed + 1
    usable = (freqs > 5) & (freqs < 1500)
    assert amplitude[near].max() > 6 * np.median(amplitude[usable]), machine.fault.kind
    healthy = simulator.render(machine.fault.onset_s / 2, 1.0, np.random.default_rng(0), _State())[:, 0]
    _, quiet = envelope_spectrum(healthy, FLEET.sample_rate)
    assert quiet[near].max() < amplitude[near].max() / 3


def test_inner_race_impacts_are_modulated_by_the_shaft() -> None:
    machine = alt_fleet(FLEET)[1]
    assert machine.fault is not None and machine.fault.kind == "inner_race"
    simulator = AltSimulator(machine, FLEET, seed=5)
    life = machine.fault.failure_s * 0.99
    x = simulator.render(life, 1.0, np.random.default_rng(1), _State())[:, 0]
    freqs, amplitude = envelope_spectrum(x, FLEET.sample_rate)
    speed = float(np.mean(simulator.speed(np.array([life]))))
    shaft_line = amplitude[np.abs(freqs - speed) <= 0.015 * speed + 1].max()
    assert shaft_line > 4 * np.median(amplitude[(freqs > 5) & (freqs < 1500)])


def test_bearing_orders_agree_with_the_agents_formulas() -> None:
    for machine in alt_fleet(AltFleet()):
        b = machine.bearing
        theirs = BearingGeometry(b.balls, b.ball_diameter, b.pitch_diameter, b.contact_deg).orders()
        for name, value in b.orders().items():
            assert value == pytest.approx(theirs[name], rel=1e-9)


def test_deterministic_by_seed() -> None:
    first, again, other = alt_fleet(FLEET), alt_fleet(FLEET), alt_fleet(replace(FLEET, seed=99))
    assert first == again and first != other
    a = next(AltSimulator(first[0], FLEET, seed=3).snapshots())[1]
    b = next(AltSimulator(again[0], FLEET, seed=3).snapshots())[1]
    c = next(AltSimulator(first[0], FLEET, seed=4).snapshots())[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (20_000, 2) and a.dtype == np.float32


def test_snapshot_timing_and_messages_make_one_window_per_burst() -> None:
    machine = alt_fleet(FLEET)[3]
    simulator = AltSimulator(machine, FLEET, seed=1)
    times = simulator.snapshot_times()
    assert len(times) == int(machine.days * DAY_S // 1200)
    assert np.all(np.abs(np.diff(times) - 1200) < 5)
    messages = []
    for message in simulator.messages(start_ns=10**18):
        messages.append(message)
        if len(messages) == 30:
            break
    assert [m.seq for m in messages] == list(range(30))
    steps = np.diff([m.timestamp_ns for m in messages]) / 1e9
    assert np.allclose(steps[[i for i in range(29) if (i + 1) % 10]], 0.1)
    assert all(steps[i] > 1000 for i in (9, 19))
    windower = Windower(1.0, 1.0, snapshot=True)
    windows = [w for m in messages for w in windower.feed(m)[0]]
    assert [w.start_ns for w in windows] == [messages[i].timestamp_ns for i in (0, 10, 20)]
    assert all(w.samples.shape == (20_000, 2) for w in windows)


def test_continuous_stream_is_contiguous() -> None:
    machine = alt_fleet(FLEET)[0]
    simulator = AltSimulator(machine, FLEET, seed=1)
    messages = list(simulator.messages(start_ns=10**18, blocks=simulator.stream(3.0, start_life_s=DAY_S)))
    assert len(messages) == 30
    assert np.allclose(np.diff([m.timestamp_ns for m in messages]) / 1e9, 0.1)
    windower = Windower(1.0, 0.5)
    assert len([w for m in messages for w in windower.feed(m)[0]]) == 5


def test_severity_grows_from_onset_to_failure() -> None:
    fault = AltFault("outer_race", onset_s=100.0, failure_s=1100.0, initial=0.03)
    assert fault.severity(50) == 0.0
    assert fault.severity(100) == pytest.approx(0.03)
    assert fault.severity(600) == pytest.approx(np.sqrt(0.03))
    assert fault.severity(1100) == pytest.approx(1.0)


def test_agent_config_and_ground_truth() -> None:
    machines = alt_fleet(FLEET)
    config = VibrationConfig(machines=agent_machines(machines))
    for machine in machines:
        assert config.mode_of(machine.machine_id) == "snapshot"
        bearing = config.bearing_of(machine.machine_id)
        assert bearing is not None
        assert bearing.geometry().orders()["bpfo"] == pytest.approx(machine.bearing.orders()["bpfo"])
    truth = ground_truth(machines[2])
    assert truth["fault"] == "ball" and truth["agent_fault"] == "rolling_element"
    assert ground_truth(machines[3])["fault"] is None

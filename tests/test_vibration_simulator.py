"""Tests of the vibration simulator: bearing physics, determinism, acquisition, wire messages, ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.bearing import BearingGeometry
from sensors.simulate.vibration import (
    Acquisition,
    FaultSpec,
    MachineSpec,
    RunSpec,
    VibrationSimulator,
    demo_run,
    make_fleet,
    run_to_failure,
)
from sensors.wire import Kind, decode, encode

FS = 10_000.0
QUIET = MachineSpec(dropouts_per_hour=0.0, spikes_per_s=0.0, resonance_hz=3000.0)


def samples(simulator: VibrationSimulator) -> np.ndarray:
    return np.concatenate([block.samples for block in simulator.blocks(0.25)])


class TestBearingGeometry:
    def test_ims_bearing_matches_published_fault_frequencies(self) -> None:
        """The IMS rig's Rexnord ZA-2115 at 2000 rpm gives the published BPFO, BPFI, BSF (x2) and FTF."""
        frequencies = BearingGeometry(16, 0.331, 2.815, 15.17).frequencies(2000 / 60)
        assert frequencies["bpfo"] == pytest.approx(236.4, abs=0.1)
        assert frequencies["bpfi"] == pytest.approx(296.9, abs=0.1)
        assert 2 * frequencies["bsf"] == pytest.approx(279.8, abs=0.1)
        assert frequencies["ftf"] == pytest.approx(14.8, abs=0.05)

    def test_cwru_bearing_matches_published_orders(self) -> None:
        """The CWRU rig's SKF 6205 gives the published multiples of running speed (ball fault at 2 x BSF)."""
        orders = BearingGeometry(9, 0.3126, 1.537, 0.0).orders()
        assert orders["bpfi"] == pytest.approx(5.4152, abs=1e-3)
        assert orders["bpfo"] == pytest.approx(3.5848, abs=1e-3)
        assert 2 * orders["bsf"] == pytest.approx(4.7135, abs=1e-3)
        assert orders["ftf"] == pytest.approx(0.39828, abs=1e-3)

    @given(n=st.integers(3, 40), d=st.floats(1, 20), ratio=st.floats(0.05, 0.45), angle=st.floats(0, 40))
    def test_kinematic_identities(self, n: int, d: float, ratio: float, angle: float) -> None:
        """For any geometry, BPFO + BPFI = n x shaft and BPFO = n x FTF."""
        orders = BearingGeometry(n, d, d / ratio, angle).orders()
        assert orders["bpfo"] + orders["bpfi"] == pytest.approx(n)
        assert orders["bpfo"] == pytest.approx(n * orders["ftf"])

    def test_implausible_geometry_is_refused(self) -> None:
        """An element larger than the pitch circle is rejected at construction."""
        with pytest.raises(ValueError, match="implausible"):
            BearingGeometry(8, 5.0, 4.0, 0.0)


class TestDeterminism:
    def test_same_seed_same_signal(self) -> None:
        """Two simulators with the same machine, run and seed produce identical samples."""
        run = run_to_failure("inner_race", 2.0, 4.0, sample_rate=FS)
        first = samples(VibrationSimulator(QUIET, run, seed=7))
        second = samples(VibrationSimulator(QUIET, run, seed=7))
        np.testing.assert_array_equal(first, second)

    def test_other_seed_other_signal(self) -> None:
        """A different seed gives a different signal."""
        run = RunSpec(duration_s=1.0, sample_rate=FS)
        assert not np.array_equal(samples(VibrationSimulator(QUIET, run, seed=1)),
                                  samples(VibrationSimulator(QUIET, run, seed=2)))

    def test_fleet_machines_differ_and_repeat(self) -> None:
        """A fleet is reproducible from its seed and each machine has its own normal state."""
        fleet = make_fleet(6, seed=3, sample_rate=FS, channels=2)
        assert fleet == make_fleet(6, seed=3, sample_rate=FS, channels=2)
        assert len({(m.shaft_hz, m.resonance_hz, m.noise_g) for m in fleet}) == 6
        assert all(m.channels == 2 and m.resonance_hz < FS / 2 for m in fleet)


class TestSignal:
    def test_shaft_line_at_shaft_speed(self) -> None:
        """A healthy machine's strongest low-frequency line is its shaft speed (less the load slip)."""
        machine = MachineSpec(shaft_hz=30.0, load_slip=0.0, dropouts_per_hour=0, spikes_per_s=0)
        x = samples(VibrationSimulator(machine, RunSpec(duration_s=2.0, sample_rate=FS), seed=0))[:, 0]
        spectrum = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / FS)
        low = freqs < 200
        assert freqs[low][np.argmax(spectrum[low])] == pytest.approx(30.0, abs=0.5)

    def test_fault_grows_vibration(self) -> None:
        """RMS rises from the healthy stretch to the end of a run-to-failure."""
        run = run_to_failure("outer_race", 2.0, 6.0, sample_rate=FS)
        x = samples(VibrationSimulator(QUIET, run, seed=0))[:, 0]
        n = int(FS)
        healthy, failing = x[:n], x[-n:]
        assert np.sqrt(np.mean(failing**2)) > 2 * np.sqrt(np.mean(healthy**2))

    def test_severity_profile(self) -> None:
        """Severity is 0 before onset, the initial value at onset, grows monotonically and is 1 at failure."""
        fault = FaultSpec("rolling_element", 10.0, 20.0, initial=0.1)
        values = [fault.severity(t) for t in np.linspace(10, 20, 21)]
        assert fault.severity(9.99) == 0.0
        assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(1.0)
        assert bool(np.all(np.diff(values) >= 0))

    def test_dropouts_flat_line_and_spikes_stand_out(self) -> None:
        """With frequent dropouts and spikes, some samples are flat zero runs and some lone spikes appear."""
        machine = MachineSpec(dropouts_per_hour=3600.0 * 2, dropout_s=0.2, spikes_per_s=20.0, spike_g=5.0)
        x = samples(VibrationSimulator(machine, RunSpec(duration_s=3.0, sample_rate=FS), seed=1))[:, 0]
        assert np.sum(x == 0.0) >= 0.2 * FS
        assert np.sum(np.abs(x) > 4.0) >= 10

    def test_resonance_above_nyquist_is_refused(self) -> None:
        """A resonance the sample rate cannot carry is a configuration error."""
        with pytest.raises(ValueError, match="Nyquist"):
            VibrationSimulator(MachineSpec(resonance_hz=6000.0), RunSpec(sample_rate=FS))


class TestAcquisition:
    def test_snapshots_every_interval(self) -> None:
        """Snapshot acquisition yields one snapshot_s capture per interval, at the right life times."""
        run = RunSpec(duration_s=3600.0, acquisition=Acquisition("snapshots", 0.5, 600.0), sample_rate=FS)
        captures = list(VibrationSimulator(QUIET, run, seed=0).snapshots())
        assert [life for life, _ in captures] == [600.0 * k for k in range(7)]
        assert all(data.shape == (int(0.5 * FS), 1) for _, data in captures)

    def test_messages_have_consecutive_seq_and_stream_timestamps(self) -> None:
        """Wire messages carry the sensor id, consecutive seq numbers and timestamps spaced by chunk_s."""
        run = RunSpec(duration_s=1.0, sample_rate=FS)
        messages = list(VibrationSimulator(QUIET, run, seed=0).messages("pump-7", start_ns=10**18, chunk_s=0.1))
        assert [m.seq for m in messages] == list(range(10))
        assert [m.timestamp_ns - 10**18 for m in messages] == [round(k * 0.1e9) for k in range(10)]
        decoded = decode(encode(messages[3]))
        assert decoded.sensor_id == "pump-7" and decoded.kind is Kind.VIBRATION and decoded.sample_rate == FS
        np.testing.assert_array_equal(decoded.samples, messages[3].samples)

    def test_snapshot_timestamps_jump_with_time_compression(self) -> None:
        """Snapshots 10 min apart in life, compressed x600, arrive 1 s apart in stream time."""
        run = RunSpec(duration_s=1800.0, acquisition=Acquisition("snapshots", 0.2, 600.0), time_scale=600.0,
                      sample_rate=FS)
        starts = [m.timestamp_ns for m in VibrationSimulator(QUIET, run, seed=0).messages("s", 0, chunk_s=0.2)]
        assert starts == [0, 10**9, 2 * 10**9, 3 * 10**9]


class TestGroundTruth:
    def test_demo_run_compresses_a_week_into_three_minutes(self) -> None:
        """A demo run standing for a week still has its onset 60 s into the 180 s stream."""
        run = demo_run("inner_race", demo_s=180.0, onset_demo_s=60.0, life_s=7 * 86400.0, sample_rate=FS)
        truth = VibrationSimulator(QUIET, run, seed=0).ground_truth("bearing-3", start_ns=5 * 10**9)
        assert truth["fault"]["type"] == "inner_race"
        assert truth["fault"]["onset"]["stream_s"] == pytest.approx(60.0)
        assert truth["fault"]["onset"]["time_ns"] == 5 * 10**9 + 60 * 10**9
        assert truth["fault"]["failure"]["life_s"] == pytest.approx(7 * 86400.0)
        assert truth["time_scale"] == pytest.approx(7 * 86400.0 / 180.0)

    def test_written_beside_a_recording(self, tmp_path: Path) -> None:
        """The ground truth is written as JSON with fault type, onset and failure, and no temp file left."""
        run = run_to_failure("outer_race", 30.0, 90.0, sample_rate=FS)
        path = VibrationSimulator(QUIET, run, seed=4).write_ground_truth(tmp_path / "run.truth.json", "m-1")
        loaded = json.loads(path.read_text())
        assert loaded["sensor_id"] == "m-1" and loaded["seed"] == 4
        assert (loaded["fault"]["onset"]["life_s"], loaded["fault"]["failure"]["life_s"]) == (30.0, 90.0)
        assert math.isclose(loaded["fault"]["fault_frequencies_hz"]["bpfo"],
                            QUIET.geometry.frequencies(QUIET.shaft_hz)["bpfo"])
        assert [p.name for p in tmp_path.iterdir()] == ["run.truth.json"]

    def test_snapshot_onset_is_first_seen_at_the_next_snapshot(self) -> None:
        """With snapshots every 10 min, an onset at 25 min is first acquired by the 30 min snapshot."""
        run = RunSpec(duration_s=3600.0, fault=FaultSpec("outer_race", 1500.0, 3600.0),
                      acquisition=Acquisition("snapshots", 1.0, 600.0), sample_rate=FS)
        truth = VibrationSimulator(QUIET, run, seed=0).ground_truth()
        assert truth["fault"]["onset"]["stream_s"] == pytest.approx(1800.0)

    @settings(max_examples=20, deadline=None)
    @given(onset=st.floats(0, 50), length=st.floats(1, 50))
    def test_invalid_fault_timeline_is_refused(self, onset: float, length: float) -> None:
        """A run shorter than its fault's failure time is refused."""
        with pytest.raises(ValueError, match="duration"):
            RunSpec(duration_s=onset + length / 2, fault=FaultSpec("outer_race", onset, onset + length))

    def test_overlapping_compressed_snapshots_are_refused(self) -> None:
        """Compressing snapshots so far that they would overlap in stream time is refused."""
        with pytest.raises(ValueError, match="overlap"):
            RunSpec(duration_s=3600.0, acquisition=Acquisition("snapshots", 1.0, 600.0), time_scale=1200.0)

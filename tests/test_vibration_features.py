"""Tests of the numpy vibration features: equality with tsfresh, physics (envelope, shaft), input checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.vibration.runtime.envelope import envelope_peak, family_fault, fault_families
from models.vibration.runtime.features import (
    FEATURE_NAMES,
    N_BANDS,
    FeatureSettings,
    UnusableWindow,
    extract,
    extract_windows,
    flat_fraction,
    prepare_windows,
    remove_spikes,
    window_features,
)
from sensors.simulate.vibration import FaultKind, MachineSpec, RunSpec, VibrationSimulator, run_to_failure

FS = 12_000.0
MACHINE = MachineSpec(shaft_hz=29.0, resonance_hz=3200.0, dropouts_per_hour=0.0, spikes_per_s=0.0)
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def simulated_windows(kind: FaultKind | None, count: int = 8, window_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """``count`` windows of MACHINE; with a fault, all of them well after onset."""
    duration = count * window_s
    run = (RunSpec(duration_s=duration, sample_rate=FS) if kind is None
           else run_to_failure(kind, 0.0, duration * 2, sample_rate=FS))
    simulator = VibrationSimulator(MACHINE, run, seed=seed)
    blocks = [block.samples for block in simulator.blocks(window_s)]
    return np.stack(blocks[-count:])


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """Short windows of healthy and faulty signals, one channel, plus a skewed one."""
    rng = np.random.default_rng(0)
    data = np.concatenate([simulated_windows(None, 3, window_s=0.05),
                           simulated_windows("inner_race", 3, window_s=0.05)])[:, :, 0]
    skewed = rng.exponential(1.0, size=(1, data.shape[1]))
    return np.concatenate([data, skewed]).astype(np.float32)


class TestAgainstTsfresh:
    def test_every_shared_feature_equals_tsfresh(self, windows: np.ndarray) -> None:
        """RMS, peak, peak-to-peak, crest, kurtosis, skewness, mean |change| and band powers match tsfresh to 1e-6."""
        pytest.importorskip("tsfresh", reason="tsfresh is in the `train` extra")
        from models.vibration.select_features import SHARED_FEATURES, tsfresh_equivalents

        reference = tsfresh_equivalents(windows, FS)
        ours, _ = extract_windows(windows[:, :, None], FS)
        assert set(reference) == set(SHARED_FEATURES)
        for name, expected in reference.items():
            np.testing.assert_allclose(ours[:, 0, INDEX[name]], expected, rtol=1e-6, atol=0, err_msg=name)

    def test_kurtosis_and_skewness_are_the_bias_corrected_ones(self, windows: np.ndarray) -> None:
        """Kurtosis and skewness are pandas' G2 and G1, which differ from the biased moments on short windows."""
        pd = pytest.importorskip("pandas", reason="pandas comes with the `train` extra")
        short = windows[:, :64].astype(np.float64)
        ours, _ = extract_windows(np.repeat(short[:, :, None], 1, axis=2), FS,
                                  FeatureSettings(shaft_hz=1000.0))
        for row, series in enumerate(short):
            assert ours[row, 0, INDEX["kurtosis"]] == pytest.approx(pd.Series(series).kurt(), rel=1e-9)
            assert ours[row, 0, INDEX["skewness"]] == pytest.approx(pd.Series(series).skew(), rel=1e-9)


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(arrays(np.float64, st.tuples(st.integers(64, 400), st.integers(1, 3)),
                  elements=st.floats(-10, 10, allow_nan=False)))
    def test_bands_sum_to_mean_square(self, window: np.ndarray) -> None:
        """The band powers split the window's mean square exactly (Parseval), for any signal and channels."""
        values, _ = extract(window, FS, FeatureSettings(shaft_hz=500.0))
        bands = values[:, INDEX["band0"]:INDEX["band0"] + N_BANDS].sum(axis=1)
        np.testing.assert_allclose(bands, np.mean(window**2, axis=0), rtol=1e-9, atol=1e-12)

    def test_channels_are_independent(self) -> None:
        """A multi-channel window gives each channel the features it would have alone (vectorised, not mixed)."""
        window = simulated_windows("outer_race", 1)[0]
        stereo = np.concatenate([window, 0.5 * window[::-1]], axis=1)
        settings_ = FeatureSettings(geometry=MACHINE.geometry, shaft_hz=29.0)
        both, _ = extract(stereo, FS, settings_)
        alone, _ = extract(stereo[:, 1:], FS, settings_)
        np.testing.assert_allclose(both[1], alone[0], rtol=1e-9)


class TestPhysics:
    @pytest.mark.parametrize(("kind", "expected"), [("outer_race", "env_bpfo"), ("inner_race", "env_bpfi"),
                                                    ("rolling_element", "env_bsf")])
    def test_envelope_spectrum_points_at_the_fault(self, kind: FaultKind, expected: str) -> None:
        """On a bearing fault the envelope spectrum's most prominent fault frequency is that fault's."""
        values, _ = extract_windows(simulated_windows(kind), FS, FeatureSettings(geometry=MACHINE.geometry))
        envelope = [name for name in FEATURE_NAMES if name in ("env_bpfo", "env_bpfi", "env_bsf")]
        prominence = np.median(values[:, 0, [INDEX[name] for name in envelope]], axis=0)
        assert envelope[int(np.argmax(prominence))] == expected
        assert prominence.max() > 5

    def test_healthy_envelope_is_flat(self) -> None:
        """On a healthy machine no fault frequency stands out of the envelope spectrum."""
        values, _ = extract_windows(simulated_windows(None), FS, FeatureSettings(geometry=MACHINE.geometry))
        assert values[:, 0, INDEX["env_bpfo"]:].max() < 5

    def test_shaft_speed_estimated_even_when_2x_dominates(self) -> None:
        """The shaft speed estimate is the fundamental, not a stronger second harmonic (misalignment)."""
        t = np.arange(int(FS)) / FS
        x = 0.02 * np.sin(2 * np.pi * 24.6 * t) + 0.1 * np.sin(2 * np.pi * 49.2 * t)
        x += 0.005 * np.random.default_rng(1).standard_normal(len(t))
        values, shaft = extract(x[:, None], FS)
        assert shaft == pytest.approx(24.6, rel=0.01)
        assert values[0, INDEX["shaft_2x"]] == pytest.approx(0.1, rel=0.05)
        assert values[0, INDEX["shaft_1x"]] == pytest.approx(0.02, rel=0.1)


def tonal_window(shaft_hz: float, harmonics: tuple[float, ...], hum: tuple[float, float] = (0.0, 50.0),
                 noise: str = "white", noise_g: float = 0.005, fs: float = 20_000.0, seed: int = 0) -> np.ndarray:
    """1 s of shaft harmonics (g), mains hum (amplitude, Hz; with its second harmonic at 0.6 of it) and
    white, pink (1/f) or brown (1/f^2 above 16 Hz, a leaky integral) noise of ``noise_g`` RMS, as (samples, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(fs)) / fs
    x = sum((a * np.sin(2 * np.pi * k * shaft_hz * t + k) for k, a in enumerate(harmonics, start=1)), np.zeros(len(t)))
    x += hum[0] * (np.sin(2 * np.pi * hum[1] * t) + 0.6 * np.sin(4 * np.pi * hum[1] * t + 0.4))
    spectrum = np.fft.rfft(rng.standard_normal(len(t)))
    f = np.maximum(np.fft.rfftfreq(len(t), 1 / fs), 1.0)
    coloured = np.fft.irfft(spectrum / {"white": 1.0, "pink": np.sqrt(f), "brown": np.hypot(f, 16.0)}[noise], len(t))
    return (x + noise_g * coloured / coloured.std())[:, None]


class TestShaftEstimate:
    """The speed is the harmonic family's, not the strongest raw line's (issue 13: half speed, mains hum)."""

    @pytest.mark.parametrize("seed", range(3))
    def test_weak_1x_in_brown_noise_under_strong_hum(self, seed: int) -> None:
        """Brown noise, a weak 1x and hum stronger than it: the shaft, not 50 Hz and not half."""
        window = tonal_window(37.3, (0.02, 0.015, 0.01), hum=(0.05, 50.0), noise="brown", noise_g=0.03, seed=seed)
        _, shaft = extract(window, 20_000.0)
        assert shaft == pytest.approx(37.3, rel=0.01)

    @pytest.mark.parametrize("seed", range(3))
    def test_coloured_noise_does_not_make_a_sub_harmonic(self, seed: int) -> None:
        """A clear 1x over brown noise: the raw level at half speed (over 2 % of 1x's power) is noise,
        not a line, so the speed is not halved."""
        window = tonal_window(33.0, (0.1, 0.01, 0.02), hum=(0.047, 50.0), noise="brown", noise_g=0.12, seed=seed)
        _, shaft = extract(window, 20_000.0)
        assert shaft == pytest.approx(33.0, rel=0.01)

    def test_a_two_pole_motor_just_below_the_mains_frequency(self) -> None:
        """A shaft at 49.2 Hz (slip 1.6 %) beside stronger 50 Hz hum is told apart from it (the hum's
        skirt, 0.8 bins away at 1 s, pulls the 1x line a little towards it: within 1 %)."""
        window = tonal_window(49.2, (0.05, 0.02, 0.01), hum=(0.08, 50.0), noise="pink", noise_g=0.03)
        _, shaft = extract(window, 20_000.0)
        assert shaft == pytest.approx(49.2, rel=0.01) and abs(shaft - 50.0) > 0.3

    def test_a_shaft_at_the_mains_speed_without_other_evidence(self) -> None:
        """A synchronous 50 Hz shaft (its lines on the hum's) is still found: no other family has support."""
        _, shaft = extract(tonal_window(50.0, (0.05, 0.02, 0.01)), 20_000.0)
        assert shaft == pytest.approx(50.0, rel=0.005)

    def test_batch_equals_one_by_one(self) -> None:
        """Vectorised over windows: each window's estimate is its own."""
        batch = np.stack([tonal_window(hz, (0.05, 0.03, 0.01), hum=(0.03, 60.0), noise="pink", noise_g=0.05, seed=k)
                          for k, hz in enumerate((12.4, 29.0, 58.7, 101.0))])
        _, together = extract_windows(batch, 20_000.0)
        alone = [extract(window, 20_000.0)[1] for window in batch]
        np.testing.assert_allclose(together, alone)
        np.testing.assert_allclose(together, (12.4, 29.0, 58.7, 101.0), rtol=0.01)


class TestInputChecks:
    def test_lone_spike_is_removed_and_impacts_are_kept(self) -> None:
        """A one-sample electrical spike is replaced; ringing fault impacts of similar height survive."""
        faulty = simulated_windows("outer_race", 1)[0]
        spiked = faulty.copy()
        spiked[1000, 0] += 40 * float(faulty.std())
        cleaned, count = remove_spikes(spiked)
        assert count == 1
        np.testing.assert_array_equal(cleaned[:1000], faulty[:1000])
        assert abs(cleaned[1000, 0]) < 10 * faulty.std()
        _, untouched = remove_spikes(faulty)
        assert untouched == 0

    def test_dropout_window_is_unusable(self) -> None:
        """A window that is mostly flat-lined raises UnusableWindow; prepare_windows leaves it out."""
        windows = simulated_windows(None, 3)
        windows[1, 200:] = 0.0
        assert flat_fraction(windows[1]) > 0.9
        with pytest.raises(UnusableWindow, match="flat"):
            window_features(windows[1], FS)
        features, _, usable = prepare_windows(windows, FS)
        assert usable.tolist() == [True, False, True] and features.shape == (2, len(FEATURE_NAMES))

    def test_too_short_window_is_refused(self) -> None:
        """A window too short to resolve the shaft speed range is rejected input with a clear reason."""
        with pytest.raises(UnusableWindow, match="shaft"):
            extract(np.random.default_rng(0).standard_normal((64, 1)), FS)


def modulated(modulation_hz: float, depth: float = 1.0, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A 3 kHz resonance whose amplitude is modulated at ``modulation_hz`` (impacts ringing it), in noise."""
    t = np.arange(int(seconds * FS)) / FS
    carrier = (1 + depth * np.cos(2 * np.pi * modulation_hz * t)) * np.sin(2 * np.pi * 3000.0 * t)
    return (carrier + 0.3 * np.random.default_rng(seed).standard_normal(len(t)))[:, None]


class TestEnvelopePeak:
    def test_a_modulation_is_found_as_its_frequency_and_shaft_order(self) -> None:
        """Impacts at 7.3 x a 25 Hz shaft show as the envelope line at 182.5 Hz, order 7.3 (1 Hz resolution)."""
        peak = envelope_peak(modulated(7.3 * 25.0), FS, 25.0)
        assert peak is not None and abs(peak.hz - 182.5) <= 1.0 and abs(peak.order - 7.3) <= 0.04
        assert peak.prominence > 10

    def test_shaft_harmonics_and_plain_noise_are_not_evidence(self) -> None:
        """A modulation at a whole order (3 x shaft: unbalance, looseness) and pure noise give no line."""
        assert envelope_peak(modulated(3 * 25.0), FS, 25.0) is None
        assert envelope_peak(modulated(100.0, depth=0.0), FS, 25.0) is None

    def test_a_simulated_outer_race_fault_points_at_its_bpfo(self) -> None:
        """Late in an outer-race run the dominant envelope line is the bearing's BPFO (or its 2nd harmonic)."""
        machine = MachineSpec(shaft_hz=31.0, resonance_hz=2600.0, dropouts_per_hour=0.0, spikes_per_s=0.0)
        run = run_to_failure("outer_race", 10.0, 30.0, sample_rate=FS)
        blocks = list(VibrationSimulator(machine, run, seed=3).blocks(0.5))[-8:]
        orders = [peak.order for block in blocks if (peak := envelope_peak(block.samples, FS, 31.0))]
        bpfo = machine.geometry.orders()["bpfo"]
        assert len(orders) == len(blocks)
        assert np.median(orders) == pytest.approx(bpfo, rel=0.02)
        assert all(min(abs(order / (k * bpfo) - 1) for k in (1, 2)) < 0.03 for order in orders)  # speed varies


def impacts(rate_hz: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Short decaying rings of a 3 kHz resonance at ``rate_hz`` (a spall struck once per pass), in noise."""
    n = int(seconds * FS)
    t = np.arange(int(0.004 * FS)) / FS
    ring = np.exp(-t / 0.0008) * np.sin(2 * np.pi * 3000.0 * t)
    signal = np.zeros(n)
    for start in (np.arange(0, seconds, 1 / rate_hz) * FS).astype(int):
        end = min(n, start + len(ring))
        signal[start:end] += ring[:end - start]
    return (signal + 0.15 * np.random.default_rng(seed).standard_normal(n))[:, None]


class TestFaultFamilies:
    FREQUENCIES = {"bpfo": 3.58 * 25.0, "bpfi": 5.42 * 25.0, "bsf": 2 * 2.36 * 25.0}

    @pytest.mark.parametrize("fault", ["bpfo", "bpfi", "bsf"])
    def test_an_impact_train_names_its_fault(self, fault: str) -> None:
        """Impacts at one fault's rate make that family (fundamental and harmonics) stand out of the others."""
        families = fault_families(impacts(self.FREQUENCIES[fault]), FS, self.FREQUENCIES)
        assert family_fault(families) == fault, families

    def test_noise_and_a_healthy_machine_name_nothing(self) -> None:
        """Plain noise, and every window of a healthy simulated machine, name no fault."""
        for seed in range(5):
            noise = np.random.default_rng(seed).standard_normal((int(FS), 1))
            assert family_fault(fault_families(noise, FS, self.FREQUENCIES)) is None
        frequencies = {"bpfo": MACHINE.geometry.frequencies(29.0)["bpfo"],
                       "bpfi": MACHINE.geometry.frequencies(29.0)["bpfi"],
                       "bsf": 2 * MACHINE.geometry.frequencies(29.0)["bsf"]}
        for window in simulated_windows(None, count=12):
            assert family_fault(fault_families(window, FS, frequencies)) is None

    def test_a_close_runner_up_names_nothing(self) -> None:
        """Two families nearly as strong as each other are not enough to name either."""
        assert family_fault({"bpfo": 6.0, "bpfi": 5.0, "bsf": 1.0}) is None
        assert family_fault({"bpfo": 6.0, "bpfi": 4.0, "bsf": 1.0}) == "bpfo"
        assert family_fault({"bpfo": 3.9, "bpfi": 1.0}) is None and family_fault({}) is None

"""Tests of normal-state learning and alarms: scorers, k-of-n, hysteresis, persistence, detection on simulated runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.vibration.runtime.features import SELECTED_FEATURES, FeatureSettings, feature_names, prepare_windows
from models.vibration.runtime.monitor import Decision, MachineMonitor, MonitorSettings, StateStore, ewma, reset_baseline
from models.vibration.runtime.scorers import SCORERS, Scorer, ScorerError, make_scorer
from sensors.errors import StateError
from sensors.simulate.vibration import FaultKind, VibrationSimulator, make_fleet, run_to_failure

SHALLOW = ["mahalanobis", "pca", "gmm"]
NAMES = [f"f{i}" for i in range(6)]  # not real feature names: no log scale, plain z-scores
RNG = np.random.default_rng(0)
MIXING = RNG.normal(size=(6, 6))


class FirstFeatureScorer(Scorer):
    """A transparent scorer for the alarm logic's tests: the score is the first normalised feature."""

    name = "first_feature"

    def fit(self, baseline: np.ndarray) -> None:
        pass

    def score(self, history: np.ndarray) -> float:
        return float(history[-1][0])

    def state(self) -> dict[str, float]:
        return {}

    def load_state(self, state: dict[str, float]) -> None:
        pass


def normal_vectors(count: int, seed: int = 1) -> np.ndarray:
    """Correlated Gaussian feature vectors standing for a healthy machine."""
    return np.random.default_rng(seed).normal(size=(count, 6)) @ MIXING + 5.0


def monitor(scorer: str = "mahalanobis", **overrides: float) -> MachineMonitor:
    values: dict = {"baseline_windows": 60, "k": 3, "n": 5, "ewma_alpha": 1.0, "clear_windows": 3,
                    "update_interval_s": 10.0, **overrides}
    return MachineMonitor("m-1", NAMES, lambda: make_scorer(scorer), MonitorSettings(**values), {"v": 1})


def learnt(scorer: str = "mahalanobis", **overrides: float) -> MachineMonitor:
    machine = monitor(scorer, **overrides)
    for i, row in enumerate(normal_vectors(60)):
        machine.update(row, i * 10**9)
    assert not machine.learning
    return machine


def feed(machine: MachineMonitor, rows: np.ndarray, start_s: int) -> list[Decision]:
    return [machine.update(row, (start_s + i) * 10**9) for i, row in enumerate(rows)]


class TestScorers:
    @pytest.mark.parametrize("name", SHALLOW)
    def test_outlier_scores_higher_than_normal(self, name: str) -> None:
        """Every shallow scorer gives a far-off vector a higher score than fresh normal ones."""
        data = normal_vectors(200)
        scorer = make_scorer(name)
        scorer.fit((data - data.mean(0)) / data.std(0))
        fresh = (normal_vectors(50, seed=9) - data.mean(0)) / data.std(0)
        normal = max(scorer.score(row[None]) for row in fresh)
        assert scorer.score(np.full((1, 6), 6.0)) > normal

    @pytest.mark.parametrize("name", SHALLOW)
    def test_state_round_trip_through_json(self, name: str) -> None:
        """A scorer restored from its JSON state scores exactly as the original."""
        import json

        data = normal_vectors(100)
        scorer = make_scorer(name)
        scorer.fit(data)
        restored = make_scorer(name)
        restored.load_state(json.loads(json.dumps(scorer.state())))
        for row in normal_vectors(10, seed=5):
            assert restored.score(row[None]) == pytest.approx(scorer.score(row[None]), rel=1e-12)

    def test_registry_names_and_errors(self) -> None:
        """The registry lists the shallow scorers and lstm_ae; an unknown name and a missing model are clear errors."""
        assert set(SHALLOW) | {"lstm_ae"} <= set(SCORERS)
        with pytest.raises(ScorerError, match="unknown scorer"):
            make_scorer("isolation_forest_9000")
        with pytest.raises(ScorerError, match="needs a model"):
            make_scorer("lstm_ae")

    def test_scores_before_fit_are_refused(self) -> None:
        """Scoring an unfitted scorer is a clear error, not a silent zero."""
        with pytest.raises(RuntimeError, match="before fit"):
            make_scorer("pca").score(np.zeros((1, 6)))


class TestLearning:
    def test_learning_then_ready(self) -> None:
        """The first window starts learning, the baseline_windows-th makes the baseline ready with a threshold."""
        machine = monitor()
        decisions = feed(machine, normal_vectors(60), 0)
        assert decisions[0].transition == "baseline_learning"
        assert all(d.transition is None and d.phase == "learning" for d in decisions[1:-1])
        assert decisions[-1].transition == "baseline_ready"
        assert np.isfinite(machine.threshold) and machine.threshold > machine.median

    def test_threshold_is_calibrated_out_of_fold(self) -> None:
        """Fresh healthy data rarely exceeds the threshold: its score quantile sits under it."""
        machine = learnt(ewma_alpha=0.3)
        smoothed = [d.smoothed for d in feed(machine, normal_vectors(300, seed=11), 100)]
        assert np.mean(np.array(smoothed) > machine.threshold) < 0.02

    def test_bad_feature_vector_is_refused(self) -> None:
        """A vector of the wrong length or with NaN is a ValueError naming the sensor."""
        machine = monitor()
        with pytest.raises(ValueError, match="m-1"):
            machine.update(np.zeros(5), 0)
        with pytest.raises(ValueError, match="finite"):
            machine.update(np.full(6, np.nan), 0)

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.floats(-100, 100), min_size=1, max_size=30), st.floats(0.05, 1.0))
    def test_ewma_stays_within_the_values(self, values: list[float], alpha: float) -> None:
        """The EWMA never leaves the range of the values it averages."""
        smoothed = ewma(np.array(values), alpha)
        assert smoothed.min() >= min(values) - 1e-9 and smoothed.max() <= max(values) + 1e-9


class TestAlarmLogic:
    def anomalous(self, count: int) -> np.ndarray:
        return normal_vectors(count, seed=4) + 40.0

    def test_fewer_than_k_exceedances_raise_nothing(self) -> None:
        """k-1 anomalous windows within n (without smoothing) raise no alarm."""
        machine = learnt()
        rows = np.concatenate([self.anomalous(2), normal_vectors(10, seed=3)])
        assert all(d.transition is None and not d.alarm for d in feed(machine, rows, 100))

    def test_k_exceedances_raise_once(self) -> None:
        """The k-th anomalous window within n raises; later ones do not raise again."""
        machine = learnt()
        decisions = feed(machine, self.anomalous(6), 100)
        assert [d.transition for d in decisions[:3]] == [None, None, "raised"]
        assert all(d.alarm for d in decisions[2:]) and all(d.transition != "raised" for d in decisions[3:])

    def test_k_of_n_counts_scattered_exceedances(self) -> None:
        """Exceedances need not be consecutive: 3 within a window of 5 raise."""
        machine = learnt()
        normal, bad = normal_vectors(5, seed=6), self.anomalous(3)
        rows = np.stack([bad[0], normal[0], bad[1], normal[1], bad[2]])
        assert [d.transition for d in feed(machine, rows, 100)][-1] == "raised"

    def test_hysteresis_clears_only_after_clear_windows_below(self) -> None:
        """An alarm survives a short dip and clears after clear_windows in a row below the clear level."""
        machine = learnt()
        feed(machine, self.anomalous(3), 100)
        dip = feed(machine, np.concatenate([normal_vectors(2, seed=7), self.anomalous(1)]), 103)
        assert all(d.alarm for d in dip)
        calm = feed(machine, normal_vectors(3, seed=8), 106)
        assert [d.transition for d in calm] == [None, None, "cleared"] and not calm[-1].alarm

    def test_updates_are_rate_limited(self) -> None:
        """While raised, anomaly updates come at most once per update_interval_s of source time."""
        machine = learnt(update_windows=1)
        decisions = feed(machine, self.anomalous(40), 100)
        updates = [d.time_ns / 1e9 for d in decisions if d.transition == "updated"]
        assert updates == [112.0, 122.0, 132.0]

    @pytest.mark.parametrize(("spacing_s", "update_windows", "expected_windows"), [
        (1.0, 4, [12, 22, 32]),     # windows 1 s apart: the 10 s interval binds
        (600.0, 4, [6, 10, 14, 18, 22, 26, 30, 34, 38]),  # snapshots 10 min apart: the window count binds
        (600.0, 12, [14, 26, 38]),
    ])
    def test_updates_are_limited_by_window_count_too(self, spacing_s: float, update_windows: int,
                                                     expected_windows: list[int]) -> None:
        """On a snapshot stream every window is past update_interval_s: update_windows keeps the updates sparse."""
        machine = learnt(update_windows=update_windows)
        decisions = [machine.update(row, round((100 + i * spacing_s) * 1e9))
                     for i, row in enumerate(self.anomalous(40))]
        raised = next(i for i, d in enumerate(decisions) if d.transition == "raised")
        assert raised == 2
        assert [i for i, d in enumerate(decisions) if d.transition == "updated"] == expected_windows

    def test_update_count_survives_a_restart(self) -> None:
        """The windows since the last update are saved with the alarm state: a restart does not send one early."""
        machine = learnt(update_interval_s=0.0, update_windows=5)
        feed(machine, self.anomalous(6), 100)  # raised at the third, 3 windows since
        resumed = monitor(update_interval_s=0.0, update_windows=5)
        resumed.load_state(machine.state())
        transitions = [d.transition for d in feed(resumed, self.anomalous(3), 106)]
        assert transitions == [None, "updated", None]

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(1, 6), st.integers(0, 5))
    def test_raises_exactly_when_k_of_the_last_n_exceed(self, above: list[bool], k: int, extra: int) -> None:
        """For any pattern of exceedances, the alarm is raised at the first window completing k of the last n."""
        n = k + extra
        machine = MachineMonitor("m-1", NAMES, FirstFeatureScorer,
                                 MonitorSettings(baseline_windows=20, k=k, n=n, ewma_alpha=1.0,
                                                 clear_windows=10_000), {})
        feed(machine, normal_vectors(20), 0)
        rows = np.where(np.array(above)[:, None], 1e3, machine.normaliser.mean[None, :])
        transitions = [d.transition for d in feed(machine, rows, 100)]
        expected = next((t for t in range(len(above)) if sum(above[max(0, t - n + 1):t + 1]) >= k), None)
        assert transitions.count("raised") == (expected is not None)
        if expected is not None:
            assert transitions[expected] == "raised"

    def test_one_wild_window_cannot_raise_with_smoothing(self) -> None:
        """With EWMA smoothing and the score cap, a single absurd window does not make k of n."""
        machine = learnt(ewma_alpha=0.3)
        rows = np.concatenate([normal_vectors(5, seed=2), normal_vectors(1, seed=2) + 1e6,
                               normal_vectors(10, seed=3)])
        assert not any(d.alarm for d in feed(machine, rows, 100))

    def test_health_and_level_follow_the_score(self) -> None:
        """Health is 100 at normal and 50 at the threshold; the level rises with the excess."""
        assert Decision(0, "monitoring", smoothed=1.0, excess=0.0).health == 100.0
        assert Decision(0, "monitoring", smoothed=1.0, excess=1.0).health == pytest.approx(50.0)
        assert [Decision(0, "monitoring", excess=e).level for e in (1.0, 2.0, 5.0)] == ["low", "medium", "high"]


class TestPersistence:
    def test_restart_resumes_identically(self, tmp_path: Path) -> None:
        """A monitor saved and loaded in a new process-like object makes the same decisions afterwards."""
        store = StateStore(tmp_path)
        original = learnt("pca", ewma_alpha=0.3)
        feed(original, normal_vectors(5, seed=3), 100)
        store.save("m-1", original.state())
        resumed = monitor("pca", ewma_alpha=0.3)
        resumed.load_state(store.load("m-1") or {})
        rows = np.concatenate([normal_vectors(5, seed=12), normal_vectors(6, seed=13) + 30])
        for a, b in zip(feed(original, rows, 200), feed(resumed, rows, 200), strict=True):
            assert (a.transition, a.alarm) == (b.transition, b.alarm)
            assert a.smoothed == pytest.approx(b.smoothed, rel=1e-12)

    def test_partial_baseline_survives_restart(self, tmp_path: Path) -> None:
        """Windows collected while learning are kept across a restart; learning completes on schedule."""
        first = monitor()
        feed(first, normal_vectors(60)[:40], 0)
        StateStore(tmp_path).save("m-1", first.state())
        second = monitor()
        second.load_state(StateStore(tmp_path).load("m-1") or {})
        decisions = feed(second, normal_vectors(60)[40:], 40)
        assert decisions[-1].transition == "baseline_ready"

    def test_state_from_other_settings_is_refused(self) -> None:
        """State learnt with another scorer or fingerprint raises and leaves the monitor learning afresh."""
        state = learnt("gmm").state()
        other = monitor("mahalanobis")
        with pytest.raises(StateError, match="scorer"):
            other.load_state(state)
        assert other.learning and not other.baseline

    def test_reset_baseline_deletes_matching_sensors(self, tmp_path: Path) -> None:
        """reset_baseline removes the state of the sensors matching the pattern and names them."""
        store = StateStore(tmp_path)
        for sensor in ("pump-1", "pump-2", "fan-1"):
            store.save(sensor, {"x": 1})
        assert reset_baseline(tmp_path, "pump-*") == ["pump-1", "pump-2"]
        assert store.sensors() == ["fan-1"]
        assert reset_baseline(tmp_path, "nothing*") == []

    def test_atomic_write_leaves_no_temporary_files(self, tmp_path: Path) -> None:
        """Saving writes the JSON file and nothing else (the temp file is renamed over it)."""
        store = StateStore(tmp_path / "state")
        store.save("m-1", learnt().state())
        store.save("m-1", learnt().state())
        assert [p.name for p in (tmp_path / "state").iterdir()] == ["m-1.json"]

    def test_corrupt_file_reads_as_none(self, tmp_path: Path) -> None:
        """An unreadable state file is treated as no state (the machine relearns), not a crash."""
        (tmp_path / "m-1.json").write_text("{not json")
        assert StateStore(tmp_path).load("m-1") is None


def detection(kind: FaultKind | None, scorer: str, seed: int) -> tuple[list[float], float]:
    """Raise times (s) on a short simulated run at 8 kHz, 0.5 s windows; onset at 40 s when faulty."""
    fs, window_s = 8000.0, 0.5
    machine = make_fleet(1, seed=seed, sample_rate=fs)[0]
    run = run_to_failure(kind or "outer_race", 40.0, 70.0, sample_rate=fs)
    if kind is None:
        run = type(run)(duration_s=70.0, sample_rate=fs)
    blocks = list(VibrationSimulator(machine, run, seed=seed).blocks(window_s))
    features, _, usable = prepare_windows(np.stack([b.samples for b in blocks]), fs,
                                          FeatureSettings(geometry=machine.geometry))
    times = np.array([b.life_s for b in blocks])[usable]
    names = feature_names(1)
    keep = [names.index(name) for name in feature_names(1, SELECTED_FEATURES)]
    mon = MachineMonitor(machine.machine_id, feature_names(1, SELECTED_FEATURES), lambda: make_scorer(scorer),
                         MonitorSettings(baseline_windows=50))
    raised = [t for t, row in zip(times, features[:, keep], strict=True)
              if mon.update(row, int(t * 1e9)).transition == "raised"]
    return raised, 40.0


class TestDetectionOnSimulatedRuns:
    @pytest.mark.parametrize("scorer", ["mahalanobis", "pca"])
    def test_healthy_machine_raises_nothing(self, scorer: str) -> None:
        """Over a healthy run, a shallow scorer raises no alarm."""
        raised, _ = detection(None, scorer, seed=21)
        assert raised == []

    @pytest.mark.parametrize(("scorer", "kind"), [("mahalanobis", "outer_race"), ("pca", "inner_race"),
                                                  ("mahalanobis", "rolling_element")])
    def test_faulty_machine_raises_after_onset(self, scorer: str, kind: FaultKind) -> None:
        """Over a run to failure, a shallow scorer raises, and not before the fault's onset."""
        raised, onset = detection(kind, scorer, seed=22)
        assert raised and raised[0] >= onset


def test_scorer_interface_is_what_lstm_builds_on() -> None:
    """The scorer ABC keeps the agreed interface: name, sequence_length, fit, score, state, load_state."""
    assert Scorer.sequence_length == 1
    assert {"fit", "score", "state", "load_state"} <= Scorer.__abstractmethods__

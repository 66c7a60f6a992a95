"""Tests of the vibration LSTM autoencoder: training code path, ONNX export, and the run-time scorer."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from models.runtime import Model, load_manifest, load_model
from models.vibration.data import DAY_S, FleetConfig, MachineRun, fleet_runs, machine_data
from models.vibration.evaluate import MachineResult, summarise
from models.vibration.runtime.lstm import LstmAutoencoderScorer
from models.vibration.runtime.monitor import MonitorSettings, Normaliser
from models.vibration.runtime.scorers import make_scorer
from sensors.simulate.vibration import Acquisition, FaultSpec, RunSpec, make_fleet

if TYPE_CHECKING:
    from models.vibration.network import LstmAutoencoder

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "vibration"
requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                    reason="training-side tests need the `train` extra (torch)")


def tiny_sequences(count: int = 96, length: int = 6, features: int = 5, seed: int = 0) -> np.ndarray:
    """Smooth, correlated toy sequences an autoencoder can learn in a few steps."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    time = np.arange(length)[None, :, None]
    mix = rng.normal(size=(1, 1, features))
    return (np.sin(0.5 * time + phase) * mix + 0.05 * rng.normal(size=(count, length, features))).astype(
        np.float32
    )


@requires_torch
class TestTraining:
    def test_a_few_epochs_reduce_the_loss(self) -> None:
        """A few epochs on tiny data give finite losses and end below where they started."""
        import torch

        from models.vibration.network import NetworkConfig
        from models.vibration.train import TrainConfig, train_autoencoder

        torch.set_num_threads(1)
        network = NetworkConfig(n_features=5, hidden_size=16, latent_size=4)
        config = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, input_noise=0.0)
        model, history = train_autoencoder(tiny_sequences(), tiny_sequences(count=32, seed=9), network, config,
                                           seed=1, log=lambda _: None)
        assert np.all(np.isfinite(history.train)) and np.all(np.isfinite(history.validation))
        assert history.train[-1] < history.train[0]
        assert min(history.validation) < history.validation[0]
        assert not model.training


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LstmAutoencoder, Path]:
    """A small untrained autoencoder and its ONNX export."""
    import torch

    from models.vibration.export import export_onnx
    from models.vibration.network import LstmAutoencoder, NetworkConfig

    torch.manual_seed(3)
    model = LstmAutoencoder(NetworkConfig(n_features=5, hidden_size=12, latent_size=3)).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", sequence_length=6)
    return model, path


@requires_torch
class TestExport:
    @pytest.mark.parametrize("batch", [1, 7])
    def test_onnx_runtime_gives_the_pytorch_outputs(self, exported: tuple[LstmAutoencoder, Path],
                                                    batch: int) -> None:
        """ONNX Runtime reproduces PyTorch's reconstruction and error for any batch size."""
        import onnxruntime as ort
        import torch

        from models.vibration.export import check_export

        model, path = exported
        sequences = np.random.default_rng(batch).normal(size=(batch, 6, 5)).astype(np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        reconstruction, error = session.run(["reconstruction", "step_error"], {"sequences": sequences})
        with torch.no_grad():
            expected_reconstruction, expected_error = model(torch.from_numpy(sequences))
        np.testing.assert_allclose(reconstruction, expected_reconstruction.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(error, expected_error.numpy(), rtol=1e-5, atol=1e-7)
        assert check_export(model, path, sequences) < 1e-5

    def test_check_export_rejects_a_different_model(self, exported: tuple[LstmAutoencoder, Path]) -> None:
        """check_export raises when the ONNX file does not hold the model it is compared with."""
        import torch

        from models.vibration.export import ExportMismatch, check_export
        from models.vibration.network import LstmAutoencoder, NetworkConfig

        _, path = exported
        torch.manual_seed(4)
        other = LstmAutoencoder(NetworkConfig(n_features=5, hidden_size=12, latent_size=3))
        with pytest.raises(ExportMismatch):
            check_export(other, path, np.ones((2, 6, 5), dtype=np.float32))


@pytest.fixture(scope="module")
def committed_model() -> Iterator[Model]:
    """The committed vibration model, run by ONNX Runtime."""
    model = load_model(MODEL_DIR / "manifest.yaml")
    yield model
    model.close()


@pytest.fixture(scope="module")
def outer_race_run(committed_model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Features of one simulated machine, normalised as the model expects: 3 healthy days, then an
    outer-race fault."""
    machine = make_fleet(1, seed=11, prefix="unit")[0]
    run = RunSpec(duration_s=4 * DAY_S, fault=FaultSpec("outer_race", 3 * DAY_S, 4 * DAY_S, initial=0.1),
                  acquisition=Acquisition("snapshots", 1.0, 1200.0))
    names = FleetConfig().feature_names
    data = machine_data(MachineRun(machine, run, seed=5), cache_dir=None, names=names)
    normaliser = Normaliser(names, committed_model.manifest.thresholds["scale_floor"])
    normaliser.fit(data.features[:120])
    return normaliser(data.features), data.days


class TestLstmScorer:
    def test_a_fault_scores_above_every_healthy_sequence(self, committed_model: Model,
                                                         outer_race_run: tuple[np.ndarray, np.ndarray]) -> None:
        """On one machine, sequences from the faulty days score above all of its healthy ones."""
        normal, days = outer_race_run
        scorer = make_scorer("lstm_ae", committed_model)
        assert isinstance(scorer, LstmAutoencoderScorer)
        length = scorer.sequence_length
        scorer.fit(normal[:120])
        healthy = [scorer.score(normal[i - length + 1:i + 1]) for i in range(120, len(days)) if days[i] < 3.0]
        faulty = [scorer.score(normal[i - length + 1:i + 1]) for i in range(length - 1, len(days))
                  if days[i - length + 1] >= 3.5]
        assert len(healthy) > 50 and faulty
        assert min(faulty) > max(healthy)
        assert abs(float(np.median(healthy))) < 2.0

    def test_state_round_trip_gives_the_same_scores(self, committed_model: Model,
                                                   outer_race_run: tuple[np.ndarray, np.ndarray]) -> None:
        """A scorer restored from another's state scores like the one that learnt it."""
        normal, _ = outer_race_run
        learnt, restored = LstmAutoencoderScorer(committed_model), LstmAutoencoderScorer(committed_model)
        learnt.fit(normal[:120])
        restored.load_state(learnt.state())
        window = normal[-learnt.sequence_length:]
        assert restored.score(window) == learnt.score(window)

    def test_state_of_another_model_version_is_refused(self, committed_model: Model,
                                                       outer_race_run: tuple[np.ndarray, np.ndarray]) -> None:
        """Baseline statistics learnt with another model version are rejected, not silently reused."""
        scorer = LstmAutoencoderScorer(committed_model)
        scorer.fit(outer_race_run[0][:120])
        with pytest.raises(ValueError, match="model version"):
            scorer.load_state({**scorer.state(), "model_version": "0.0.0-other"})

    def test_bad_shapes_are_rejected(self, committed_model: Model) -> None:
        """A baseline shorter than a sequence, or a history of the wrong shape, raises ValueError."""
        scorer = LstmAutoencoderScorer(committed_model)
        features = len(committed_model.manifest.preprocessing["feature_names"])
        with pytest.raises(ValueError, match="baseline"):
            scorer.fit(np.zeros((scorer.sequence_length, features)))
        scorer.fit(np.random.default_rng(0).normal(size=(40, features)))
        with pytest.raises(ValueError, match="shape"):
            scorer.score(np.zeros((scorer.sequence_length, features + 1)))


def machine_result(active: list[bool], onset_day: float | None, failure_day: float | None = None) -> MachineResult:
    """A result on one snapshot a day, days 0..n-1, whose baseline ended on day 1."""
    days = np.arange(len(active), dtype=float)
    return MachineResult("m", "test", "outer_race" if onset_day is not None else None, onset_day, failure_day,
                         learn_end_day=1.0, days=days, excess=np.zeros(len(days)), active=np.array(active))


class TestEvaluationMetrics:
    def test_delay_is_from_onset_to_the_first_alarm_on(self) -> None:
        """The delay runs from the onset to the first snapshot at or after it with the alarm on."""
        result = machine_result([False] * 6 + [True] * 4, onset_day=4.0, failure_day=9.0)
        assert result.delay_days == 2.0
        assert result.delay_share == pytest.approx(2.0 / 5.0)
        assert result.false_alarms == 0
        assert result.healthy_days == 3.0

    def test_alarms_before_onset_are_false_and_counted_per_raise(self) -> None:
        """Each raise before the onset is one false alarm; one still on at onset also detects it."""
        result = machine_result([False, False, True, False, True, True, True], onset_day=5.0)
        assert result.false_alarms == 2
        assert result.delay_days == 0.0

    def test_a_fault_without_alarm_after_onset_is_missed(self) -> None:
        """No alarm on or after the onset means a miss (no delay), whatever happened before."""
        result = machine_result([False, True, False, False, False], onset_day=3.0)
        summary = summarise([result])
        assert result.delay_days is None and summary["missed"] == ["m"] and summary["detected"] == 0
        assert summary["false_alarms"] == 1

    def test_healthy_machines_give_false_alarm_rate_per_day(self) -> None:
        """On a healthy machine every raise is false, over the days after the baseline."""
        results = [machine_result([False, True, True, False, True, False], onset_day=None),
                   machine_result([False] * 6, onset_day=None)]
        summary = summarise(results)
        assert summary["false_alarms"] == 2
        assert summary["healthy_machine_days"] == 8.0
        assert summary["false_alarms_per_machine_day"] == pytest.approx(0.25)
        assert summary["faulty"] == 0 and summary["median_delay_share"] is None


class TestFleet:
    def test_fleet_is_deterministic_with_the_configured_share_of_faults(self) -> None:
        """The same config gives the same fleet; faults go to the configured share, kinds in turn, after
        the baseline and before the end of life."""
        config = FleetConfig(machines=9, seed=3, faulty_share=1 / 3)
        runs = fleet_runs(config)
        assert runs == fleet_runs(config)
        faults = [entry.run.fault for entry in runs if entry.run.fault is not None]
        assert [fault.kind for fault in faults] == ["outer_race", "inner_race", "rolling_element"]
        for entry in runs:
            life_days = entry.run.duration_s / DAY_S
            assert config.days[0] <= life_days <= config.days[1]
            if entry.run.fault is not None:
                assert entry.run.fault.failure_s == entry.run.duration_s
                assert 0.4 * entry.run.duration_s <= entry.run.fault.onset_s <= 0.7 * entry.run.duration_s


class TestModelCard:
    def test_the_cards_choices_and_values_are_the_codes(self) -> None:
        """Each setting the card says it chose (**`name` value**) is MonitorSettings' default and the manifest's,
        and a floor or margin other than those appears only where the card says it was earlier."""
        card = (MODEL_DIR / "README.md").read_text()
        defaults, thresholds = MonitorSettings(), load_manifest(MODEL_DIR).thresholds
        chosen = re.findall(r"\*\*`(\w+)` ([\d.]+)\*\*", card)
        assert {name for name, _ in chosen} >= {"scale_floor", "threshold_margin"}
        for name, value in chosen:
            assert float(value) == getattr(defaults, name) == thresholds[name], name
        current = {"floor": defaults.scale_floor, "margin": defaults.threshold_margin}
        for paragraph in card.split("\n\n"):
            for word, value in re.findall(r"\b(floor|margin) (\d+(?:\.\d+)?)\b", paragraph):
                if float(value) != current[word]:
                    assert re.search(r"earl(y|ier)|historical", paragraph, re.IGNORECASE), paragraph

    def test_the_card_quotes_the_settings_of_the_code_and_the_manifest(self) -> None:
        """The card's settings table is MonitorSettings' defaults and the manifest's thresholds, not memory."""
        card = (MODEL_DIR / "README.md").read_text()
        table = card.split("<!-- monitor settings: checked by tests/test_vibration_model.py -->")[1]
        table = table.split("<!-- end of monitor settings -->")[0]
        rows = [line.split("|")[1:4] for line in table.strip().splitlines()[2:]]
        quoted = {name.strip().strip("`"): (code.strip(), manifest.strip()) for name, code, manifest in rows}
        thresholds = load_manifest(MODEL_DIR).thresholds
        assert quoted == {name: (str(value), str(thresholds.get(name, "")))
                          for name, value in MonitorSettings().model_dump().items()}

"""Tests of the vibration LSTM autoencoder: training code path, ONNX export, and the run-time scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training-side tests need the `train` extra (torch)")

from models.vibration.export import ExportMismatch, check_export, export_onnx  # noqa: E402
from models.vibration.network import LstmAutoencoder, NetworkConfig  # noqa: E402
from models.vibration.train import TrainConfig, train_autoencoder  # noqa: E402


def tiny_sequences(count: int = 96, length: int = 6, features: int = 5, seed: int = 0) -> np.ndarray:
    """Smooth, correlated toy sequences an autoencoder can learn in a few steps."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(count, 1, 1))
    time = np.arange(length)[None, :, None]
    mix = rng.normal(size=(1, 1, features))
    return (np.sin(0.5 * time + phase) * mix + 0.05 * rng.normal(size=(count, length, features))).astype(
        np.float32
    )


class TestTraining:
    def test_a_few_epochs_reduce_the_loss(self) -> None:
        """A few epochs on tiny data give finite losses and end below where they started."""
        torch.set_num_threads(1)
        network = NetworkConfig(n_features=5, hidden_size=16, latent_size=4)
        config = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, input_noise=0.0)
        model, history = train_autoencoder(tiny_sequences(), network, config, seed=1, log=lambda _: None)
        assert np.all(np.isfinite(history.train)) and np.all(np.isfinite(history.validation))
        assert history.train[-1] < history.train[0]
        assert min(history.validation) < history.validation[0]
        assert not model.training


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LstmAutoencoder, Path]:
    """A small untrained autoencoder and its ONNX export."""
    torch.manual_seed(3)
    model = LstmAutoencoder(NetworkConfig(n_features=5, hidden_size=12, latent_size=3)).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", sequence_length=6)
    return model, path


class TestExport:
    @pytest.mark.parametrize("batch", [1, 7])
    def test_onnx_runtime_gives_the_pytorch_outputs(self, exported: tuple[LstmAutoencoder, Path],
                                                    batch: int) -> None:
        """ONNX Runtime reproduces PyTorch's reconstruction and error for any batch size."""
        import onnxruntime as ort

        model, path = exported
        sequences = np.random.default_rng(batch).normal(size=(batch, 6, 5)).astype(np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        reconstruction, error = session.run(["reconstruction", "error"], {"sequences": sequences})
        with torch.no_grad():
            expected_reconstruction, expected_error = model(torch.from_numpy(sequences))
        np.testing.assert_allclose(reconstruction, expected_reconstruction.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(error, expected_error.numpy(), rtol=1e-5, atol=1e-7)
        assert check_export(model, path, sequences) < 1e-5

    def test_check_export_rejects_a_different_model(self, exported: tuple[LstmAutoencoder, Path]) -> None:
        """check_export raises when the ONNX file does not hold the model it is compared with."""
        _, path = exported
        torch.manual_seed(4)
        other = LstmAutoencoder(NetworkConfig(n_features=5, hidden_size=12, latent_size=3))
        with pytest.raises(ExportMismatch):
            check_export(other, path, np.ones((2, 6, 5), dtype=np.float32))

"""The inference runtime: manifests, the ONNX Runtime backend, provider choice and fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import structlog

from models.runtime import ManifestError, TensorRTConfig, load_manifest, load_model
from models.runtime.onnxrt import OnnxRuntimeConfig, choose_providers
from tests.conftest import write_energy_model


class TestManifest:
    def test_checksum_mismatch_is_refused(self, tmp_path: Path) -> None:
        """A model file that does not match its manifest's sha256 is not loaded."""
        manifest = write_energy_model(tmp_path)
        (tmp_path / "model.onnx").write_bytes((tmp_path / "model.onnx").read_bytes() + b"\0")
        with pytest.raises(ManifestError, match="does not match its sha256"):
            load_manifest(manifest)

    def test_unknown_manifest_keys_are_refused(self, tmp_path: Path) -> None:
        """Manifests are strict like the agent config."""
        manifest = write_energy_model(tmp_path)
        manifest.write_text(manifest.read_text() + "surprise: 1\n")
        with pytest.raises(ManifestError, match="surprise"):
            load_manifest(manifest)


class TestProviders:
    def test_missing_providers_fall_back_to_cpu_in_order(self) -> None:
        """Requested providers this build lacks are skipped; CPU always closes the list."""
        assert choose_providers(["tensorrt", "cuda", "cpu"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
        assert choose_providers(["cuda"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
            "CUDAExecutionProvider", "CPUExecutionProvider"]

    def test_fallback_is_logged_with_what_was_asked_and_what_is_used(self, tmp_path: Path) -> None:
        """Asking for CUDA on a CPU-only build warns, names both, and still runs the model."""
        manifest = write_energy_model(tmp_path)
        with structlog.testing.capture_logs() as logs:
            model = load_model(manifest, OnnxRuntimeConfig(providers=["cuda", "cpu"]))
        warning = next(e for e in logs if e["event"] == "execution providers missing, falling back")
        assert warning["used"] == ["CPUExecutionProvider"] and "CUDAExecutionProvider" in warning["asked"]
        (energy,) = model.run({"x": np.full((1, 4, 1), 2.0, np.float32)})
        assert float(energy) == pytest.approx(4.0)

    def test_native_tensorrt_absent_falls_back_to_onnxruntime(self, tmp_path: Path) -> None:
        """Without tensorrt installed, the tensorrt backend config still runs the model, loudly, on ORT."""
        manifest = write_energy_model(tmp_path / "m")
        with structlog.testing.capture_logs() as logs:
            model = load_model(manifest, TensorRTConfig(cache_dir=tmp_path / "cache"))
        assert any(e["event"].startswith("native TensorRT backend unavailable") for e in logs)
        (energy,) = model.run({"x": np.full((1, 4, 1), 3.0, np.float32)})
        assert float(energy) == pytest.approx(9.0)

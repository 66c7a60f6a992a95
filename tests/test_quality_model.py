"""Tests of the quality model code path: crop sampling, a few training steps, ONNX export, thresholds, manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.quality.data import CropSampler, build_bank, cell_labels
from models.quality.export import INPUT_NAME, OUTPUT_NAMES, export_onnx
from models.quality.network import NetworkConfig, Probabilities, TileNet
from models.quality.pretrain import SHAPES, pretrain_backbone
from models.quality.runtime.tiling import TileGeometry
from models.quality.train import FitConfig, choose_threshold, fit, load_config
from models.runtime import load_manifest
from sensors.simulate.parts import PartGenerator

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "quality"


@pytest.fixture(scope="module")
def sampler() -> CropSampler:
    generator = PartGenerator(seed=21)
    parts = [generator.part("val", i, defective=i < 2) for i in range(4)]
    return CropSampler(build_bank(parts), TileGeometry(), positive_fraction=0.5, seed=0)


class TestCrops:
    def test_positive_crops_hold_their_defect(self, sampler: CropSampler) -> None:
        """Defect crops have a defective cell; good crops from good parts have none."""
        x, tile, cells = sampler.batch(16, augment=False)
        assert x.shape == (16, 1, 64, 64) and cells.shape == (16, 8, 8)
        np.testing.assert_array_equal(tile, [1.0] * 8 + [0.0] * 8)
        np.testing.assert_array_equal(cells.reshape(16, -1).max(axis=1), tile)

    def test_cell_labels_mark_cells_with_any_painted_pixel(self) -> None:
        """A single painted pixel marks exactly its 8x8 cell."""
        painted = np.zeros((1, 64, 64), dtype=bool)
        painted[0, 17, 42] = True
        cells = cell_labels(painted, 8)
        assert cells.sum() == 1 and cells[0, 2, 5]


class TestTraining:
    def test_few_steps_then_onnx_matches_pytorch(self, sampler: CropSampler, tmp_path: Path) -> None:
        """A few training steps lower nothing into NaN, and the exported ONNX gives PyTorch's outputs."""
        import onnxruntime as ort

        torch.manual_seed(0)
        net = TileNet(NetworkConfig([8, 16, 32]))
        val = sampler.batch(32, augment=False)
        history = fit(net, sampler, val, FitConfig(steps=4, batch=8, eval_every=2), "test")
        assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
        path = export_onnx(net.eval(), tmp_path / "model.onnx", tile=64)
        tiles = np.random.default_rng(1).normal(size=(5, 1, 64, 64)).astype(np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_tile, onnx_cells, onnx_features = session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles})
        with torch.no_grad():
            torch_tile, torch_cells, torch_features = Probabilities(net.eval())(torch.from_numpy(tiles))
        np.testing.assert_allclose(onnx_tile, torch_tile.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(onnx_cells, torch_cells.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(onnx_features, torch_features.numpy(), rtol=1e-4, atol=1e-5)
        assert onnx_features.shape == (5, net.backbone.width, 8, 8)
        np.testing.assert_allclose(onnx_tile, onnx_cells.reshape(5, -1).max(axis=1), rtol=1e-6)

    def test_training_is_reproducible_from_the_seed(self, sampler: CropSampler) -> None:
        """Two runs with the same seeds end with identical weights (one command reproduces the model)."""
        states = []
        for _ in range(2):
            torch.manual_seed(3)
            net = TileNet(NetworkConfig([8, 16, 32]))
            again = CropSampler(sampler.bank, sampler.geometry, positive_fraction=0.5, seed=9, hard_fraction=0.25)
            fit(net, again, again.batch(8, augment=False), FitConfig(steps=3, batch=8, eval_every=3), "repro")
            states.append(net.state_dict())
        for name, tensor in states[0].items():
            torch.testing.assert_close(tensor, states[1][name], rtol=0, atol=0)

    def test_pretraining_runs_and_returns_backbone_weights(self) -> None:
        """Pretraining on synthetic shapes returns weights that load into the tile network's backbone."""
        weights, history = pretrain_backbone(NetworkConfig([8, 16, 32]), steps=3, batch=len(SHAPES) * 2,
                                             lr=1e-3, tile=64, seed=0)
        TileNet(NetworkConfig([8, 16, 32])).backbone.load_state_dict(weights)
        assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)


class TestThreshold:
    @given(st.lists(st.floats(0, 1), min_size=1, max_size=400), st.sampled_from([0.001, 0.01, 0.05, 0.2]))
    @settings(max_examples=100, deadline=None)
    def test_false_rejects_stay_within_the_target(self, scores: list[float], target: float) -> None:
        """Rejecting scores above the chosen threshold rejects at most the target share of good parts."""
        threshold = choose_threshold(np.array(scores), target)
        assert np.mean(np.array(scores) > threshold) <= target + 1e-12


class TestCommittedModel:
    def test_manifest_describes_the_model(self) -> None:
        """The committed manifest matches its ONNX file and says how to tile, normalise and decide."""
        manifest = load_manifest(MODEL_DIR / "manifest.yaml")
        assert manifest.task == "quality" and manifest.report == "README.md"
        assert 0 < manifest.thresholds["reject"] < 1
        assert {"tile", "stride", "cell", "normalisation"} <= set(manifest.preprocessing)
        assert manifest.training["command"] == "python -m models.quality.train --config models/quality/train.yaml"
        assert manifest.training["seed"] == load_config(MODEL_DIR / "train.yaml").seed
        assert manifest.onnx_path.stat().st_size < 2 * 1024 * 1024
        assert [output.name for output in manifest.outputs] == list(OUTPUT_NAMES)

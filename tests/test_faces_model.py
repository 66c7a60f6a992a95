"""Tests of the face embedder: the ArcFace margin, a few training steps, ONNX export, metrics, the shipped model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.faces import metrics
from models.faces.data import Bank, DataConfig, load_split, split_identities
from models.faces.export import check_export, export_onnx, onnx_embed
from models.faces.network import ArcMargin, FaceNet, NetworkConfig, preprocess
from models.faces.train import FitConfig, TrainConfig, train
from models.runtime import load_manifest

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "faces"
TINY_NET = NetworkConfig(stem=8, widths=[8, 16, 16], blocks=[1, 1, 1], embedding=16)
TINY_DATA = DataConfig(train_identities=8, train_images=3, val_identities=4, val_images=2, test_identities=4)


@pytest.fixture(scope="module")
def tiny_bank() -> Iterator[Bank]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests share a small machine; more threads only fight over it
    yield load_split(TINY_DATA, "train", cache=None)
    torch.set_num_threads(threads)


class TestArcMargin:
    def test_the_margin_makes_the_same_prediction_cost_more(self) -> None:
        torch.manual_seed(0)
        head = ArcMargin(4, 3, scale=16.0, margin=0.5)
        embeddings, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
        with torch.no_grad():
            assert float(head(embeddings, labels, margin=0.5)) > float(head(embeddings, labels, margin=0.0))

    def test_embeddings_on_their_class_centre_cost_almost_nothing_without_margin(self) -> None:
        head = ArcMargin(3, 3, scale=32.0, margin=0.0)
        with torch.no_grad():
            head.weight.copy_(torch.eye(3))
            assert float(head(torch.eye(3) * 5, torch.tensor([0, 1, 2]))) < 1e-3


class TestTraining:
    def test_a_few_steps_on_a_fixed_batch_lower_a_finite_loss(self, tiny_bank: Bank) -> None:
        torch.manual_seed(0)
        net, head = FaceNet(TINY_NET), ArcMargin(16, 8, scale=16.0, margin=0.2)
        optimiser = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=3e-3)
        images, labels = torch.from_numpy(preprocess(tiny_bank.images)), torch.from_numpy(tiny_bank.labels)
        losses = []
        for _ in range(6):
            loss = head(net(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        assert all(np.isfinite(losses))
        assert losses[-1] < losses[0]

    def test_train_keeps_a_checkpoint_and_history(self, tiny_bank: Bank, tmp_path: Path) -> None:
        config = TrainConfig(data=TINY_DATA, network=TINY_NET,
                             fit=FitConfig(steps=4, identities_per_group=2, images_per_identity=2, eval_every=2))
        val = load_split(TINY_DATA, "val", cache=None)
        summary = train(config, tiny_bank, val, tmp_path)
        assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "history.json").is_file()
        assert summary["history"]["step"] == [2.0, 4.0]
        assert 0.0 <= summary["best_val_accuracy"] <= 1.0

    def test_splits_share_no_identity(self) -> None:
        splits = split_identities(DataConfig(train_identities=40, val_identities=8, test_identities=12))
        keys = [p.index for people in splits.values() for p in people]
        assert len(keys) == len(set(keys)) == 60
        assert {p.group for p in splits["test"]} == {p.group for p in splits["train"]}


class TestExport:
    def test_onnx_matches_pytorch(self, tiny_bank: Bank, tmp_path: Path) -> None:
        torch.manual_seed(1)
        net = FaceNet(TINY_NET).eval()
        path = export_onnx(net, tmp_path / "model.onnx")
        assert check_export(net, path, tiny_bank.images[:5]) < 1e-4
        embeddings = onnx_embed(path, tiny_bank.images[:3])
        assert embeddings.shape == (3, 16)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


class TestMetrics:
    def test_ten_fold_accuracy_of_one_unrecoverable_pair_in_twenty(self) -> None:
        """9 genuine at 0.9, 1 genuine below every impostor, 10 impostors at 0.1: only the outlier is wrong."""
        scores = np.array([0.9] * 9 + [0.05] + [0.1] * 10)
        same = np.array([True] * 10 + [False] * 10)
        accuracy, _, threshold = metrics.ten_fold_accuracy(scores, same)
        assert accuracy == pytest.approx(0.95)
        assert 0.1 < threshold < 0.9

    def test_separable_scores_give_perfect_accuracy_and_a_square_roc(self) -> None:
        scores, same = np.array([0.8, 0.7, 0.3, 0.2]), np.array([True, True, False, False])
        assert metrics.ten_fold_accuracy(np.tile(scores, 5), np.tile(same, 5))[0] == 1.0
        threshold, accuracy = metrics.best_threshold(scores, same)
        assert accuracy == 1.0 and 0.3 < threshold <= 0.7
        fmr, tmr = metrics.roc_curve(scores, same)
        assert list(tmr) == [0, 0.5, 1, 1, 1] and list(fmr) == [0, 0, 0, 0.5, 1]
        assert metrics.match_rates(scores, same, 0.75) == {"fmr": 0.0, "fnmr": 0.5}
        assert metrics.tmr_at_fmr(np.array([0.9, 0.2, 0.5, 0.1]), np.array([True, True, False, False]), 0.0) == 0.5

    def test_rank1_counts_probes_whose_nearest_gallery_entry_is_their_own(self) -> None:
        embeddings = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0], [0.1, 0.9, 0], [0.8, 0, 0.2]], float)
        labels = np.array([0, 1, 2, 0, 1, 2])  # the last probe (identity 2) lies nearest identity 0
        gallery, probes = metrics.gallery_split(labels)
        assert list(gallery) == [0, 1, 2] and list(probes) == [3, 4, 5]
        assert metrics.rank1(embeddings, labels, gallery, probes) == pytest.approx(2 / 3)

    def test_pairs_are_within_group_and_half_genuine(self) -> None:
        labels = np.repeat(np.arange(8), 3)
        groups = np.repeat(np.array(["a", "b"] * 4), 3)
        first, second, same = metrics.make_pairs(labels, groups, np.random.default_rng(0), 10)
        assert (groups[first] == groups[second]).all()
        assert same.sum() == (~same).sum() == 10
        assert ((labels[first] == labels[second]) == same).all()



class TestShippedModel:
    def test_manifest_model_is_small_unit_length_and_has_a_threshold(self, tiny_bank: Bank) -> None:
        manifest = load_manifest(MODEL_DIR / "manifest.yaml")
        assert manifest.onnx_path.stat().st_size < 25 * 2**20
        embeddings = onnx_embed(manifest.onnx_path, tiny_bank.images[:4])
        assert embeddings.shape == (4, 128)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
        assert -1.0 < manifest.thresholds["same_person_similarity"] < 1.0

"""Tests of the speaker-embedding model: the loss, a few training steps, ONNX export, the shipped model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.runtime import load_manifest
from models.speakers import metrics
from models.speakers.data import CorpusConfig, build_split, speaker_splits
from models.speakers.export import INPUT_NAME, OPSET, OUTPUT_NAME, check_export, export_onnx, onnx_embedder
from models.speakers.network import NetworkConfig, SpeakerNet, pkld_loss
from models.speakers.runtime import features
from models.speakers.train import FitConfig, TrainConfig, train_variant
from sensors.simulate.speech import Voice, synthesise

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "speakers"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


class TestPkldLoss:
    def test_agreeing_same_speaker_pairs_cost_nothing_and_disagreeing_ones_cost(self) -> None:
        """Same-speaker pairs pay their symmetric KL; different-speaker pairs pay only inside the margin."""
        confident = torch.tensor([[10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
        assert float(pkld_loss(confident, torch.tensor([0, 0, 1]))) < 1e-3
        assert float(pkld_loss(confident, torch.tensor([0, 1, 1]))) > 1.0

    def test_identical_outputs_of_different_speakers_cost_the_margin(self) -> None:
        """Two different speakers with the same distribution pay 2m per unordered pair (m per ordered pair)."""
        logits = torch.zeros(2, 4)
        assert float(pkld_loss(logits, torch.tensor([0, 1]), margin=3.0)) == pytest.approx(3.0)


class TestSplits:
    def test_speakers_are_disjoint_and_the_independent_ones_never_heard(self) -> None:
        """No speaker is in two splits; the independent split's engines/voices/variants are never trained on."""
        splits = speaker_splits(CorpusConfig())
        ids = [voice.id for voices in splits.values() for voice in voices]
        assert len(ids) == len(set(ids))
        assert len(splits["test"]) == 40
        heard = {(v.engine, v.name if v.engine != "espeak-ng" else v.variant) for v in splits["train"]}
        for voice in splits["independent"]:
            assert (voice.engine, voice.name if voice.engine != "espeak-ng" else voice.variant) not in heard


@needs_espeak
class TestTraining:
    def test_a_few_steps_of_each_loss_train_and_export_to_matching_onnx(self, tmp_path: Path) -> None:
        """Both losses run on tiny synthesised data, keep a checkpoint, and export to ONNX Runtime faithfully."""
        config = CorpusConfig(seed=3)
        voices = [Voice("espeak-ng", "en-us", "m3", 30, 160), Voice("espeak-ng", "en-gb", "f2", 70, 150),
                  Voice("espeak-ng", "en-gb-scotland", "klatt", 50, 140)]
        utterances = build_split(voices, 2, 1, config, "tiny", workers=1)
        corpus = {"train": utterances, "val": utterances}
        train_config = TrainConfig(network=NetworkConfig(hidden=8),
                                   fit=FitConfig(steps=4, speakers_per_batch=3, segments_per_speaker=2, eval_every=2))
        for loss in ("pkld", "am_softmax"):
            summary = train_variant(train_config, loss, corpus, tmp_path / loss)
            assert (tmp_path / loss / "checkpoint.pt").is_file()
            assert np.isfinite(summary["history"]["train_loss"]).all()
        net = SpeakerNet(NetworkConfig(hidden=8, speakers=3)).eval()
        path = export_onnx(net, tmp_path / "model.onnx")
        segments = features.segments(utterances[0].mel)
        assert check_export(net, path, segments) < 1e-4
        assert onnx_embedder(path)(segments).shape == (len(segments), 16)


class TestShippedModel:
    def test_model_matches_its_manifest(self) -> None:
        """sha256, task, I/O names and shapes, opset and thresholds of the committed model agree."""
        import onnx
        import onnxruntime as ort

        manifest = load_manifest(MODEL_DIR / "manifest.yaml")  # verifies the sha256
        assert manifest.task == "speakers"
        assert {"distance_cut", "assign_distance", "change_distance"} <= set(manifest.thresholds)
        session = ort.InferenceSession(str(manifest.onnx_path), providers=["CPUExecutionProvider"])
        (given,), (produced,) = session.get_inputs(), session.get_outputs()
        assert (given.name, given.shape[1:]) == (INPUT_NAME, [features.SEGMENT_FRAMES, features.N_MELS])
        assert (produced.name, produced.shape[1:]) == (OUTPUT_NAME, manifest.outputs[0].shape[1:])
        assert [spec.shape for spec in manifest.inputs] == [["batch", 40, 128]]
        assert max(op.version for op in onnx.load(str(manifest.onnx_path)).opset_import if op.domain == "") <= OPSET

    @needs_espeak
    @pytest.mark.xfail(strict=True, reason="the shipped model (400 CPU steps, validation MR 59 %) does not "
                       "separate these two voices yet; strict, so a better model turns this into a failure "
                       "that asks for the marker to go (models/speakers/README.md)")
    def test_two_utterances_of_one_speaker_are_closer_than_two_speakers(self) -> None:
        """Two sentences of one synthesised speaker embed closer together than either does to another one's."""
        manifest = load_manifest(MODEL_DIR / "manifest.yaml")
        embed = onnx_embedder(manifest.onnx_path)
        first = Voice("espeak-ng", "en-us", "m3", 35, 150)
        second = Voice("espeak-ng", "en-gb", "f3", 70, 170)
        texts = ["The conveyor on line three stopped after lunch, so please tell maintenance.",
                 "Did anyone check the cooling pump before the break?"]
        mels = [features.log_mel(synthesise(voice, text)) for voice, text in
                [(first, texts[0]), (first, texts[1]), (second, texts[0]), (second, texts[1])]]
        a1, a2, b1, b2 = metrics.unit(metrics.utterance_embeddings(embed, mels))
        same = max(1 - a1 @ a2, 1 - b1 @ b2)
        different = min(1 - a1 @ b1, 1 - a1 @ b2, 1 - a2 @ b1, 1 - a2 @ b2)
        assert same < different
        assert same < manifest.thresholds["distance_cut"] < different

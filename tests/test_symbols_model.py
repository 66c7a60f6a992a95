"""Tests of the symbol detector's data, training and export: real engravings, DWD targets, a few steps, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verovio", reason="the train extra (verovio, cairosvg, music21) engraves the pages")

from models.symbols import data, engrave, soup
from models.symbols.export import check_export, export_onnx
from models.symbols.network import WatershedDetector
from models.symbols.train import Phase, TrainConfig, losses, train


@pytest.fixture(scope="module")
def chorale() -> engrave.Page:
    piece = next(p for p in engrave.corpus_pieces(("bach",)) if p.name == "bwv1.6.mxl")
    page = engrave.engrave(piece, "Leipzig", 1, 1400)
    assert page is not None
    return page


def test_an_engraved_page_labels_its_glyphs_where_the_ink_is(chorale: engrave.Page) -> None:
    height, width = chorale.image.shape
    assert (height, width) == (1980, 1400)
    boxes, labels = chorale.boxes, chorale.labels
    assert len(labels) > 100
    assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= height))
    names = {engrave.CLASS_NAMES[i] for i in labels}
    assert {"noteheadBlack", "gClef", "fClef"} <= names
    heads = boxes[labels == engrave.CLASS_NAMES.index("noteheadBlack")].astype(int)
    inked = [chorale.image[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in heads]
    assert np.median(inked) < 0.6 * chorale.image.mean(), "notehead boxes must sit on the noteheads' ink"
    assert engrave.class_of("noteheadBlack") == 0 and engrave.class_of("staffLine") is None


def test_training_and_held_out_composers_are_disjoint() -> None:
    assert not set(engrave.TRAIN_COMPOSERS) & set(engrave.TEST_COMPOSERS)
    assert not set(engrave.TRAIN_FONTS) & set(engrave.TEST_FONTS)
    train_pieces = set(engrave.corpus_pieces(engrave.TRAIN_COMPOSERS))
    assert train_pieces and not train_pieces & set(engrave.corpus_pieces(engrave.TEST_COMPOSERS))


def test_energy_targets_peak_at_the_centre_and_vanish_outside_the_oval() -> None:
    boxes = np.array([[10, 20, 30, 30], [50, 50, 53, 53]], np.float32)  # a notehead and a tiny dot
    energy, classes, sizes = data.targets((64, 64), boxes, np.array([2, 5]), levels=8)
    assert energy[25, 20] == 7 and classes[25, 20] == 2 and tuple(sizes[:, 25, 20]) == (10, 20)
    assert energy[20, 10] == 0 and energy[0, 0] == 0
    assert (energy[49:55, 49:55] > 0).sum() >= 4, "tiny symbols keep a few pixels of energy"
    assert set(np.unique(classes[energy > 0])) == {2, 5}


def test_degraded_crops_keep_their_boxes_on_the_symbols(chorale: engrave.Page) -> None:
    rng = np.random.default_rng(0)
    image, boxes, labels = data.crop(chorale, rng, 256, strength=1.0)
    assert image.shape == (256, 256) and len(boxes) == len(labels)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.all((centres >= 0) & (centres < 256))


def test_the_independent_generator_is_deterministic_and_labels_its_ink() -> None:
    first, again = soup.pages(1, seed=4, width=600)[0], soup.pages(1, seed=4, width=600)[0]
    assert np.array_equal(first.image, again.image) and np.array_equal(first.boxes, again.boxes)
    assert len(first.labels) > 20
    inked = [first.image[int(y0):int(y1), int(x0):int(x1)].min() for x0, y0, x1, y1 in first.boxes]
    assert max(inked) < 128


def test_a_few_training_steps_lower_the_loss_and_the_onnx_export_matches(chorale: engrave.Page,
                                                                           tmp_path: Path) -> None:
    config = TrainConfig(phases=[Phase(heads=["energy", "class", "size"], steps=30, lr=0.003)], crop=64,
                         batch=4, eval_every=15, widths=[8, 8, 16, 16, 16])
    pages = data.PageSet([chorale])
    fixed = data.batch(pages, np.random.default_rng(5), 64, 8, config.levels, 0.5)
    torch.manual_seed(config.seed)  # the very network train() starts from (it draws nothing else from torch)
    start = WatershedDetector(len(engrave.CLASS_NAMES), config.levels, tuple(config.widths))
    net, history = train(config, pages=(pages, pages))
    assert len(history) == 2 and all(np.isfinite(list(h.values())).all() for h in history)

    def total(model: WatershedDetector) -> float:
        model.train()  # batch statistics: a few steps leave BatchNorm's running averages near their start
        with torch.no_grad():
            return float(sum(losses(model, fixed, config).values()))

    assert total(net) < 0.9 * total(start)
    path = export_onnx(net, tmp_path / "model.onnx")
    page = chorale.image[:192, :256].astype(np.float32)[None, None] / 255.0
    assert check_export(net, path, page) < 1e-3


def test_the_network_keeps_full_resolution() -> None:
    net = WatershedDetector(classes=7, levels=5).eval()
    with torch.no_grad():
        energy, classes, size = net(torch.zeros(1, 1, 96, 128))
    assert energy.shape == (1, 5, 96, 128) and classes.shape == (1, 7, 96, 128) and size.shape == (1, 2, 96, 128)

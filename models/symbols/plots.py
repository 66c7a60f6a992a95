"""Pictures for the symbol detector's card: learning curves per head, worst-page overlays, an energy map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

from models.symbols.engrave import Page
from models.symbols.runtime.pages import PageResult, RunTiles


def learning_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Train and validation loss of each head over the steps; phase boundaries marked."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [h["step"] for h in history]
    for axis, head in zip(axes, ("energy", "class", "size"), strict=True):
        axis.plot(steps, [h[f"train_{head}"] for h in history], label="train (one batch)")
        axis.plot(steps, [h[f"val_{head}"] for h in history], "--", label="validation")
        for previous, current in itertools.pairwise(history):
            if current["phase"] != previous["phase"]:
                axis.axvline(previous["step"], color="grey", alpha=0.4)
        axis.set(title=f"{head} head loss", xlabel="step", yscale="log")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("DWD: energy, class, size heads trained one by one (grey lines), then jointly")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def overlays(pages: list[tuple[Page, PageResult]], path: Path, width: int = 900) -> Path:
    """The pages side by side: truth in green, detections in red (the worst pages of the test)."""
    drawn = []
    for page, result in pages:
        image = Image.fromarray(page.image).convert("RGB")
        draw = ImageDraw.Draw(image)
        for box in page.boxes:
            draw.rectangle(tuple(float(v) for v in box), outline=(0, 170, 0))
        for box in result.detections.boxes:
            draw.rectangle(tuple(float(v) for v in box), outline=(220, 0, 0))
        scale = width / image.width
        drawn.append(image.resize((width, int(image.height * scale))))
    canvas = Image.new("RGB", (width * len(drawn), max(d.height for d in drawn)), "white")
    for index, image in enumerate(drawn):
        canvas.paste(image, (index * width, 0))
    canvas.save(path, quality=85)  # a JPEG: the photos' noise makes PNGs of pages megabytes
    return path


def energy_map(run: RunTiles, page: Page, path: Path, side: int = 512) -> Path:
    """A crop of a page beside the energy level the network predicts for each pixel."""
    crop = page.image[:side, :side]
    tile = np.full((side, side), 255, np.uint8)
    tile[: crop.shape[0], : crop.shape[1]] = crop
    energy, _, _ = run((tile.astype(np.float32) / 255.0)[None, None])
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    axes[0].imshow(tile, cmap="gray")
    axes[0].set_title("page crop")
    shown = axes[1].imshow(energy[0].argmax(axis=0), cmap="magma")
    axes[1].set_title("predicted watershed energy level")
    fig.colorbar(shown, ax=axes[1], fraction=0.046)
    for axis in axes:
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

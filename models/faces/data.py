"""Face image banks rendered from the synthetic generators: disjoint train/val/test identities, cached on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sensors.simulate import faces, faces_alt

CACHE = Path(__file__).resolve().parents[2] / "build" / "faces-banks"


class DataConfig(BaseModel):
    """How many identities and pictures each split gets; identities are split by position, never shared."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=21, description="identity seed; rendering seeds derive from it")
    train_identities: int = 800
    train_images: int = 12
    val_identities: int = 80
    val_images: int = 4
    test_identities: int = 240
    test_images: int = 6
    alt_identities: int = 160
    alt_images: int = 6


@dataclass
class Bank:
    """Rendered crops with, per crop, the identity number (0-based within the bank) and its group."""

    images: np.ndarray  # (N, 112, 112, 3) uint8
    labels: np.ndarray  # (N,) int64
    groups: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.labels)


def render_bank(people: Sequence[Any], render: Callable[[Any, np.random.Generator, int], np.ndarray],
                images_each: int, seed: int, size: int = 112) -> Bank:
    """``images_each`` crops of every person, each with its own nuisance, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    crops = np.empty((len(people) * images_each, size, size, 3), np.uint8)
    for i, person in enumerate(people):
        for j in range(images_each):
            crops[i * images_each + j] = render(person, rng, size)
    labels = np.repeat(np.arange(len(people)), images_each)
    groups = np.repeat(np.array([p.group for p in people]), images_each)
    return Bank(crops, labels, groups)


def split_identities(config: DataConfig) -> dict[str, list[faces.Identity]]:
    """Disjoint identity lists by position in one seeded draw (each a multiple of the group count stays balanced)."""
    sizes = {"train": config.train_identities, "val": config.val_identities, "test": config.test_identities}
    people = faces.sample_identities(sum(sizes.values()), config.seed)
    splits, start = {}, 0
    for name, count in sizes.items():
        splits[name] = people[start : start + count]
        start += count
    return splits


def load_split(config: DataConfig, split: str, cache: Path | None = CACHE) -> Bank:
    """The rendered bank of ``split`` (train, val, test or alt), from the cache when it was made before."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:10]
    path = cache / f"{split}-{digest}.npz" if cache else None
    if path is not None and path.is_file():
        stored = np.load(path)
        return Bank(stored["images"], stored["labels"], stored["groups"])
    offsets = {"train": 1, "val": 2, "test": 3, "alt": 4}
    if split == "alt":
        alt_people = faces_alt.sample_identities(config.alt_identities, config.seed + 1000)
        bank = render_bank(alt_people, faces_alt.render_face, config.alt_images, config.seed * 10 + offsets[split])
    else:
        images_each = {"train": config.train_images, "val": config.val_images, "test": config.test_images}[split]
        bank = render_bank(split_identities(config)[split], faces.render_face, images_each,
                           config.seed * 10 + offsets[split])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=bank.images, labels=bank.labels, groups=bank.groups)
    return bank

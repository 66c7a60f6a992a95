"""Detector scenes: frames from the scene generators, letterboxed to the network input, with boxes and landmarks.

Every scene shows people of one group only, so each face's group is known even when ``render_scene`` drops a
face that finds no room.  Training scenes use only the embedder's training identities (0-799 of seed 21);
validation uses 800-879, test 880-1119, and the independent set ``faces_alt`` people of seed 1021.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.faces.runtime.detector import INPUT_HEIGHT, INPUT_WIDTH, letterbox
from sensors.simulate import faces, faces_alt

CACHE = Path(__file__).resolve().parents[3] / "build" / "faces-detector-scenes"
SPLIT_IDENTITIES = {"train": (0, 800), "val": (800, 880), "test": (880, 1120)}


class SceneConfig(BaseModel):
    """How many scenes each split gets and how crowded they are."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(default=21, description="identity seed of the embedder split (models/faces/README.md)")
    train_scenes: int = 900
    val_scenes: int = 80
    test_scenes: int = 160
    alt_scenes: int = 160
    max_faces: int = Field(default=8, description="faces asked for per scene (1..max; fewer fit sometimes)")
    faceless: float = Field(default=0.1, description="share of scenes with no face at all")
    width: int = Field(default=640, description="rendered frame width (then letterboxed to the network input)")
    height: int = 480
    workers: int = Field(default=2, description="rendering processes")


@dataclass
class Scenes:
    """Letterboxed frames and, per frame, the faces in network-input pixels."""

    images: np.ndarray  # (N, INPUT_HEIGHT, INPUT_WIDTH, 3) uint8
    boxes: list[np.ndarray]  # per frame (F, 4) x0 y0 x1 y1
    landmarks: list[np.ndarray]  # per frame (F, 5, 2); NaN where the generator gives none
    groups: list[list[str]]  # per frame, per face


@lru_cache(maxsize=8)  # drawing 1,120 identities takes 1.6 s; once per worker process, not per scene
def _people(split: str, seed: int) -> list[Any]:
    if split == "alt":
        return list(faces_alt.sample_identities(160, seed + 1000))
    low, high = SPLIT_IDENTITIES[split]
    return list(faces.sample_identities(SPLIT_IDENTITIES["test"][1], seed)[low:high])


def _render_one(args: tuple[str, int, SceneConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One scene of ``split`` number ``index``: a group, up to ``max_faces`` of its people, letterboxed."""
    split, index, config = args
    people = _people(split, config.seed)
    rng = np.random.default_rng([config.seed, index, ["train", "val", "test", "alt"].index(split)])
    group = faces.GROUPS[index % len(faces.GROUPS)]
    mine = [p for p in people if p.group == group]
    count = 0 if rng.random() < config.faceless else int(rng.integers(1, config.max_faces + 1))
    chosen = [mine[int(i)] for i in rng.choice(len(mine), count, replace=False)]
    render: Callable[..., tuple[np.ndarray, Sequence[tuple[Any, Any]]]] = (
        faces_alt.render_scene if split == "alt" else faces.render_scene)
    frame, placed = render(chosen, rng, config.width, config.height)
    image, scale = letterbox(frame)
    boxes = np.array([box for box, _ in placed], np.float32).reshape(-1, 4) * scale
    marks = np.array([np.array(m, np.float32) if m is not None else np.full((5, 2), np.nan, np.float32)
                      for _, m in placed], np.float32).reshape(-1, 5, 2) * scale
    return image, boxes, marks, [group] * len(placed)


def load_scenes(config: SceneConfig, split: str, cache: Path | None = CACHE) -> Scenes:
    """The scenes of ``split`` (train, val, test or alt), rendered once and cached under ``build/``."""
    count = {"train": config.train_scenes, "val": config.val_scenes, "test": config.test_scenes,
             "alt": config.alt_scenes}[split]
    key = hashlib.sha256(f"{config.model_dump_json(exclude={'workers'})}{split}{INPUT_WIDTH}x{INPUT_HEIGHT}"
                         .encode()).hexdigest()[:12]
    path = cache / f"{split}-{key}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return _unpack(dict(data))
    jobs = [(split, i, config) for i in range(count)]
    if config.workers > 1 and count > 8:
        with ProcessPoolExecutor(config.workers) as pool:
            rendered = list(pool.map(_render_one, jobs, chunksize=8))
    else:
        rendered = [_render_one(job) for job in jobs]
    packed = _pack(rendered)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **packed)  # type: ignore[arg-type]  # numpy's stub types the first keyword
    return _unpack(packed)


def _pack(rendered: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]) -> dict[str, np.ndarray]:
    counts = np.array([len(r[1]) for r in rendered], np.int64)
    return {"images": np.stack([r[0] for r in rendered]), "counts": counts,
            "boxes": np.concatenate([r[1] for r in rendered]).reshape(-1, 4),
            "landmarks": np.concatenate([r[2] for r in rendered]).reshape(-1, 5, 2),
            "groups": np.array([g for r in rendered for g in r[3]], dtype="U8")}


def _unpack(data: dict[str, np.ndarray]) -> Scenes:
    edges = np.concatenate([[0], np.cumsum(data["counts"])])
    spans = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    return Scenes(images=data["images"], boxes=[data["boxes"][s] for s in spans],
                  landmarks=[data["landmarks"][s] for s in spans],
                  groups=[[str(g) for g in data["groups"][s]] for s in spans])

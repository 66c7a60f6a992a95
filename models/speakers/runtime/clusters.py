"""On-line speaker clusters of one microphone (numpy/scipy): assign each turn, re-cluster now and then.

Each turn joins the nearest cluster whose centroid is within ``assign_distance`` (cosine distance of
normalised embeddings) or opens a new cluster.  Every ``recluster_every`` turns the remembered turns
(at most ``max_turns``, oldest forgotten first) are clustered again with complete linkage cut at
``distance_cut``; the new clusters are matched to the old ids by their shared turns (Hungarian
assignment, ``scipy.optimize.linear_sum_assignment``), so ids stay stable.  A new cluster that took
turns from one that lives on is a *split*; an old cluster whose turns all went elsewhere was *merged*;
the others are *new*.  At most ``max_clusters`` clusters: opening one more ages out the one heard
least recently (counted).  :meth:`SpeakerClusters.state` is what persists: centroids, counts, names
and a summary of the history, never audio and never per-turn embeddings.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from models.speakers.runtime.embedding import cosine_distance, mean_embedding, normalise

STATE_VERSION = 1


class ClusterSettings(BaseModel):
    """How turns are grouped (the task's config inherits these fields and their defaults)."""

    model_config = ConfigDict(extra="forbid")
    recluster_every: int = Field(default=8, ge=1, le=10_000, description="re-cluster after this many turns")
    max_clusters: int = Field(default=24, ge=2, le=1000, description="clusters kept per microphone; more age out "
                              "the least recently heard")
    max_turns: int = Field(default=300, ge=10, le=5000, description="turns remembered for re-clustering per "
                           "microphone (oldest forgotten first)")
    centroid_memory: int = Field(default=50, ge=1, le=100_000, description="a centroid moves like the mean of "
                                 "this many recent turns")


@dataclass
class Cluster:
    """One speaker cluster."""

    id: int
    centroid: np.ndarray
    turns: int = 0
    seconds: float = 0.0
    name: str | None = None
    first_ns: int = 0
    last_ns: int = 0


@dataclass(frozen=True)
class Change:
    """What a re-clustering (or a new turn) changed: ``clusters`` are the ids concerned, ``into`` the result."""

    kind: Literal["new", "merged", "split", "aged_out"]
    clusters: tuple[int, ...]
    into: int | None


@dataclass(frozen=True)
class Assignment:
    """Where a turn went: its cluster, the distance to that cluster's centroid, and how clear the choice was."""

    cluster: int
    distance: float
    confidence: float
    new: bool


@dataclass
class _Remembered:
    embedding: np.ndarray
    cluster: int


@dataclass
class SpeakerClusters:
    """The clusters of one microphone."""

    settings: ClusterSettings
    assign_distance: float
    distance_cut: float
    clusters: dict[int, Cluster] = field(default_factory=dict)
    next_id: int = 0
    since_recluster: int = 0
    aged_out: int = 0
    forgotten_turns: int = 0
    merges: int = 0
    splits: int = 0
    total_turns: int = 0

    def __post_init__(self) -> None:
        self.memory: collections.deque[_Remembered] = collections.deque()

    def assign(self, embedding: np.ndarray, start_ns: int, end_ns: int) -> tuple[Assignment, list[Change]]:
        """Put one turn's normalised embedding into a cluster; re-clusters when it is time."""
        embedding = normalise(np.asarray(embedding, dtype=np.float32))
        changes: list[Change] = []
        ids = list(self.clusters)
        distances = (cosine_distance(np.stack([self.clusters[i].centroid for i in ids]), embedding)
                     if ids else np.zeros(0, np.float32))
        order = np.argsort(distances)
        if ids and distances[order[0]] <= self.assign_distance:
            cluster = self.clusters[ids[order[0]]]
            memory = min(cluster.turns, self.settings.centroid_memory)
            cluster.centroid = normalise(cluster.centroid * memory + embedding)
            nearest = float(distances[order[0]])
            runner_up = float(distances[order[1]]) if len(ids) > 1 else 2.0
            confidence = _clip((runner_up - nearest) / max(runner_up, 1e-6)) * _clip(1 - nearest / 2)
            new = False
        else:
            cluster = self._open(embedding, start_ns, changes)
            nearest = 0.0
            runner_up = float(distances[order[0]]) if ids else 2.0
            confidence = _clip((runner_up - self.assign_distance) / self.assign_distance)
            new = True
        cluster.turns += 1
        cluster.seconds += (end_ns - start_ns) / 1e9
        cluster.last_ns = max(cluster.last_ns, end_ns)
        self.total_turns += 1
        self._remember(embedding, cluster.id)
        self.since_recluster += 1
        assignment = Assignment(cluster.id, round(nearest, 4), round(confidence, 3), new)
        if self.since_recluster >= self.settings.recluster_every:
            changes.extend(self.recluster())
        return assignment, changes

    def _open(self, embedding: np.ndarray, start_ns: int, changes: list[Change]) -> Cluster:
        if len(self.clusters) >= self.settings.max_clusters:
            oldest = min(self.clusters.values(), key=lambda item: item.last_ns)
            self._drop(oldest.id)
            self.aged_out += 1
            changes.append(Change("aged_out", (oldest.id,), None))
        cluster = Cluster(self.next_id, embedding, first_ns=start_ns, last_ns=start_ns)
        self.clusters[cluster.id] = cluster
        self.next_id += 1
        changes.append(Change("new", (cluster.id,), cluster.id))
        return cluster

    def _drop(self, cluster_id: int) -> None:
        self.clusters.pop(cluster_id, None)
        kept = [item for item in self.memory if item.cluster != cluster_id]
        self.forgotten_turns += len(self.memory) - len(kept)
        self.memory = collections.deque(kept)

    def _remember(self, embedding: np.ndarray, cluster_id: int) -> None:
        self.memory.append(_Remembered(embedding, cluster_id))
        while len(self.memory) > self.settings.max_turns:
            self.memory.popleft()
            self.forgotten_turns += 1

    def recluster(self) -> list[Change]:
        """Complete linkage over the remembered turns, matched to the current ids; returns what changed."""
        self.since_recluster = 0
        if len(self.memory) < 2:
            return []
        vectors = np.stack([item.embedding for item in self.memory]).astype(np.float64)
        labels = fcluster(linkage(vectors, method="complete", metric="cosine"), t=self.distance_cut,
                          criterion="distance") - 1
        old_ids = sorted({item.cluster for item in self.memory})
        overlap = np.zeros((len(old_ids), int(labels.max()) + 1), dtype=np.int64)
        for item, label in zip(self.memory, labels, strict=True):
            overlap[old_ids.index(item.cluster), label] += 1
        rows, cols = linear_sum_assignment(-overlap)
        mapping = {int(col): old_ids[row] for row, col in zip(rows, cols, strict=True) if overlap[row, col] > 0}
        changes: list[Change] = []
        for label in range(overlap.shape[1]):
            if label not in mapping:
                source = old_ids[int(np.argmax(overlap[:, label]))]
                mapping[label] = self.next_id
                self.clusters[self.next_id] = Cluster(self.next_id, np.zeros_like(vectors[0], np.float32))
                kind: Literal["split", "new"] = "split" if source in mapping.values() else "new"
                changes.append(Change(kind, (source,), self.next_id))
                self.splits += kind == "split"
                self.next_id += 1
        for row, old in enumerate(old_ids):
            if old not in mapping.values():
                into = mapping[int(np.argmax(overlap[row]))]
                self._merge(old, into)
                changes.append(Change("merged", (old, into), into))
        self._relabel(labels, mapping)
        return changes

    def _merge(self, old: int, into: int) -> None:
        source, target = self.clusters.pop(old), self.clusters[into]
        target.turns += source.turns
        target.seconds += source.seconds
        target.name = target.name or source.name
        target.first_ns = min(target.first_ns or source.first_ns, source.first_ns)
        target.last_ns = max(target.last_ns, source.last_ns)
        self.merges += 1

    def _relabel(self, labels: np.ndarray, mapping: dict[int, int]) -> None:
        members: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        for item, label in zip(self.memory, labels, strict=True):
            moved_from = item.cluster
            item.cluster = mapping[int(label)]
            members[item.cluster].append(item.embedding)
            if moved_from != item.cluster and moved_from in self.clusters:
                self.clusters[moved_from].turns = max(0, self.clusters[moved_from].turns - 1)
                self.clusters[item.cluster].turns += 1
        for cluster_id, vectors in members.items():
            self.clusters[cluster_id].centroid = mean_embedding(np.stack(vectors))

    def name(self, cluster_id: int, name: str) -> None:
        self.clusters[cluster_id].name = name

    def state(self) -> dict[str, Any]:
        """What persists (JSON): centroids, counts, names and the history summary."""
        return {
            "version": STATE_VERSION, "next_id": self.next_id,
            "history": {"turns": self.total_turns, "merges": self.merges, "splits": self.splits,
                        "aged_out": self.aged_out, "forgotten_turns": self.forgotten_turns},
            "clusters": [{"id": c.id, "centroid": [round(float(v), 6) for v in c.centroid], "turns": c.turns,
                          "seconds": round(c.seconds, 2), "name": c.name, "first_ns": c.first_ns,
                          "last_ns": c.last_ns} for c in self.clusters.values()],
        }

    def load_state(self, state: dict[str, Any], dimension: int) -> None:
        """Resume from :meth:`state`; ValueError if it does not fit (other version or embedding size)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"state version {state.get('version')!r}, expected {STATE_VERSION}")
        clusters = {}
        for item in state["clusters"]:
            centroid = np.asarray(item["centroid"], dtype=np.float32)
            if centroid.shape != (dimension,) or not np.all(np.isfinite(centroid)):
                raise ValueError(f"cluster {item['id']}: centroid of shape {centroid.shape}, expected ({dimension},)")
            clusters[int(item["id"])] = Cluster(int(item["id"]), normalise(centroid), int(item["turns"]),
                                                float(item["seconds"]), item.get("name"), int(item["first_ns"]),
                                                int(item["last_ns"]))
        history = state.get("history", {})
        self.clusters = dict(list(clusters.items())[-self.settings.max_clusters :])
        self.next_id = max([int(state["next_id"]), *[i + 1 for i in clusters]])
        self.total_turns = int(history.get("turns", 0))
        self.merges, self.splits = int(history.get("merges", 0)), int(history.get("splits", 0))
        self.aged_out = int(history.get("aged_out", 0))
        self.forgotten_turns = int(history.get("forgotten_turns", 0))


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))

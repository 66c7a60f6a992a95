"""An IoU tracker for face boxes: track ids across frames, a mean embedding per track, one decision per track."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes; 0 when either is empty."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    area_first = (first[2] - first[0]) * (first[3] - first[1])
    area_second = (second[2] - second[0]) * (second[3] - second[1])
    return float(overlap / (area_first + area_second - overlap))


def _as_box(box: Sequence[float]) -> Box:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


@dataclass
class Track:
    """One face followed across frames: its last box, the frames it was missed, and its embeddings."""

    track_id: int
    box: Box
    missed: int = 0
    embeddings: list[np.ndarray] = field(default_factory=list)
    decided: bool = False

    def add_embedding(self, embedding: np.ndarray) -> None:
        """Keep an L2-normalised copy (a zero vector is skipped: it says nothing about who this is)."""
        vector = np.asarray(embedding, dtype=np.float64).ravel()
        norm = float(np.linalg.norm(vector))
        if norm > 0:
            self.embeddings.append(vector / norm)

    def mean_embedding(self) -> np.ndarray | None:
        """The L2-normalised mean of the track's embeddings, or None before the first."""
        if not self.embeddings:
            return None
        mean = np.mean(self.embeddings, axis=0)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else None


@dataclass
class FrameResult:
    """What one frame did: the track id of each input box (same order), and the tracks that ended."""

    track_ids: list[int]
    ended: list[Track]


class IouTracker:
    """Greedy IoU matching of each frame's boxes to live tracks; a box matching none starts a new track.

    Ids only grow, so an id is never reused, even after its track ended.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, boxes: Sequence[Box]) -> FrameResult:
        """Match one frame's boxes; tracks unseen for more than ``max_missed`` frames end."""
        pairs = sorted(((iou(track.box, box), track_id, index)
                        for track_id, track in self.tracks.items() for index, box in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, int] = {}
        matched_tracks: set[int] = set()
        for overlap, track_id, index in pairs:  # best overlaps first, so a crowded frame pairs sensibly
            if overlap < self.iou_threshold:
                break
            if index in assigned or track_id in matched_tracks:
                continue
            assigned[index] = track_id
            matched_tracks.add(track_id)
        ids = []
        for index, box in enumerate(boxes):
            known = assigned.get(index)
            if known is None:
                track_id = self._next_id
                self._next_id += 1
                self.tracks[track_id] = Track(track_id, _as_box(box))
            else:
                track_id = known
                self.tracks[track_id].box = _as_box(box)
                self.tracks[track_id].missed = 0
            ids.append(track_id)
        ended = []
        for track_id in [key for key in self.tracks if key not in matched_tracks and key not in ids]:
            track = self.tracks[track_id]
            track.missed += 1
            if track.missed > self.max_missed:
                ended.append(self.tracks.pop(track_id))
        return FrameResult(ids, ended)

    def finish(self) -> list[Track]:
        """End every live track (the stream stopped)."""
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended


@dataclass(frozen=True)
class Decision:
    """The one decision made for a track: its mean embedding over ``frames`` embeddings."""

    track_id: int
    embedding: np.ndarray
    frames: int
    at_track_end: bool


class DecisionPolicy:
    """Decide once per track: as soon as it has ``min_frames`` embeddings, or when it ends with at least one."""

    def __init__(self, min_frames: int = 5) -> None:
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.min_frames = min_frames

    def ready(self, track: Track) -> Decision | None:
        """The decision for a live track once it has enough embeddings; None before, and after it decided."""
        if track.decided or len(track.embeddings) < self.min_frames:
            return None
        return self._decide(track, at_track_end=False)

    def ended(self, track: Track) -> Decision | None:
        """The decision for a track that ended undecided with some embeddings (a face seen only briefly)."""
        if track.decided or not track.embeddings:
            return None
        return self._decide(track, at_track_end=True)

    @staticmethod
    def _decide(track: Track, at_track_end: bool) -> Decision | None:
        embedding = track.mean_embedding()
        if embedding is None:
            return None
        track.decided = True
        return Decision(track.track_id, embedding, len(track.embeddings), at_track_end)

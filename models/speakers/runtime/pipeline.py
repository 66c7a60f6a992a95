"""One microphone's live diarization: 16 kHz audio in order -> voice activity -> turns -> speaker clusters.

The speakers task runs one :class:`Diarizer` per microphone, and the DER evaluation
(``models.speakers.diarization``) runs the very same class on synthetic conversations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.speakers.runtime.clusters import Assignment, Change, ClusterSettings, SpeakerClusters
from models.speakers.runtime.embedding import Embed, segment_embeddings
from models.speakers.runtime.turns import Speech, Turn, TurnSettings, TurnTracker, split_at_changes
from models.speakers.runtime.vad import SileroVad


@dataclass(frozen=True)
class Thresholds:
    """The model's cosine-distance thresholds (its manifest's ``thresholds``, or the config's)."""

    distance_cut: float
    assign_distance: float
    change_distance: float


@dataclass(frozen=True)
class LiveTurn:
    """A turn as it was decided: where it is, which cluster took it, what that changed, and its audio."""

    turn: Turn
    assignment: Assignment
    changes: list[Change]
    speech: Speech


class Diarizer:
    """Voice activity, turns and clusters of one microphone."""

    def __init__(self, vad: SileroVad, embed: Embed, settings: TurnSettings,
                 cluster_settings: ClusterSettings, thresholds: Thresholds) -> None:
        self.embed = embed
        self.settings = settings
        self.thresholds = thresholds
        self.tracker = TurnTracker(vad.stream(), settings)
        self.clusters = SpeakerClusters(cluster_settings, thresholds.assign_distance, thresholds.distance_cut)

    def reset(self) -> None:
        """A break in the stream: the open speech is dropped, sample counting restarts; clusters stay."""
        self.tracker.reset()

    def feed(self, audio: np.ndarray, time_ns: TimeOf) -> list[LiveTurn]:
        """Add 16 kHz mono audio; returns the turns it completed, assigned to clusters. ``time_ns(sample)`` maps
        a sample index of the stream to source time. ValueError if the model returns non-finite values."""
        decided = []
        for speech in self.tracker.feed(audio):
            embeddings = segment_embeddings(speech.audio, self.embed, self.settings.segment_hop_s)
            for turn in split_at_changes(speech, embeddings, self.settings, self.thresholds.change_distance):
                assignment, changes = self.clusters.assign(turn.embedding, time_ns(turn.start), time_ns(turn.end))
                decided.append(LiveTurn(turn, assignment, changes, speech))
        return decided


class TimeOf:
    """Sample index of a stream -> source time, from the time of its sample 0."""

    def __init__(self, origin_ns: int, rate: float = 16_000.0) -> None:
        self.origin_ns = origin_ns
        self.rate = rate

    def __call__(self, sample: int) -> int:
        return self.origin_ns + round(sample * 1e9 / self.rate)

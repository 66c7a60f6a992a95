"""Speech turns of one microphone: voice activity cut at pauses, then at speaker changes inside.

:class:`TurnTracker` follows silero-vad's probabilities chunk by chunk with hysteresis (speech starts
at ``onset``, continues while above ``offset``) and closes a stretch of speech after ``min_pause_s``
below it, or when it reaches ``max_turn_s`` (the next stretch continues at once).  Stretches shorter
than ``min_turn_s`` are dropped.  :func:`split_at_changes` then looks for speaker changes inside a
stretch on its embedding sequence: at each segment boundary, the cosine distance between the mean
embeddings of the ``change_window_s`` before and after it; peaks above ``change_distance`` at least one
window apart and from the ends cut the stretch.  Sample indices count 16 kHz samples from the
stream's origin (its last reset).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.speakers.runtime.embedding import SEGMENT_HOP_S, cosine_distance, mean_embedding
from models.speakers.runtime.features import HOP, SAMPLE_RATE, SEGMENT_FRAMES
from models.speakers.runtime.vad import CHUNK, VadStream


class TurnSettings(BaseModel):
    """How speech is cut into turns (the task's config inherits these fields and their defaults)."""

    model_config = ConfigDict(extra="forbid")
    vad_onset: float = Field(default=0.5, gt=0, lt=1, description="speech starts at this VAD probability")
    vad_offset: float = Field(default=0.35, gt=0, lt=1, description="speech continues while above this")
    min_pause_s: float = Field(default=0.4, ge=0.05, le=10, description="a pause this long ends a turn")
    min_turn_s: float = Field(default=0.6, ge=0.4, le=30, description="shorter speech is dropped")
    max_turn_s: float = Field(default=12.0, ge=2, le=60, description="a longer turn is cut (bounds latency)")
    pad_s: float = Field(default=0.1, ge=0, le=0.5, description="audio kept either side of the speech")
    change_window_s: float = Field(default=1.5, ge=0.4, le=10,
                                   description="length of the stretches compared by the change detector")
    segment_hop_s: float = Field(default=SEGMENT_HOP_S, ge=0.1, le=0.4, description="one 0.4 s segment is "
                                 "embedded every this many seconds of speech (0.4: half the model's work)")


@dataclass(frozen=True)
class Speech:
    """A closed stretch of speech: samples [start, end) of the stream, and its audio (padded)."""

    start: int
    end: int
    audio: np.ndarray
    audio_start: int
    forced: bool  # cut at max_turn_s, not at a pause


@dataclass(frozen=True)
class Turn:
    """One speaker's turn: samples [start, end), its normalised embedding, how it was cut."""

    start: int
    end: int
    embedding: np.ndarray
    segments: int
    overlap: bool  # cut from a stretch with a speaker change inside (no pause between the speakers)


class TurnTracker:
    """Voice activity -> closed stretches of speech, for one microphone."""

    def __init__(self, vad: VadStream, settings: TurnSettings) -> None:
        self.vad = vad
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """A break in the stream: the open stretch is dropped, counting restarts at 0."""
        self.vad.reset()
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0
        self.fed = 0
        self.start: int | None = None
        self.last_speech = 0

    def feed(self, audio: np.ndarray) -> list[Speech]:
        """Add 16 kHz audio; returns the stretches of speech it closed."""
        audio = np.asarray(audio, dtype=np.float32)
        first_chunk = self.vad.chunks
        probabilities = self.vad.feed(audio)
        self.buffer = np.concatenate((self.buffer, audio))
        self.fed += len(audio)
        closed = []
        s = self.settings
        pause, longest = round(s.min_pause_s * SAMPLE_RATE), round(s.max_turn_s * SAMPLE_RATE)
        for offset, probability in enumerate(probabilities):
            begin = (first_chunk + offset) * CHUNK
            end = begin + CHUNK
            if self.start is None:
                if probability >= s.vad_onset:
                    self.start, self.last_speech = begin, end
                continue
            if probability >= s.vad_offset:
                self.last_speech = end
            if end - self.last_speech >= pause:
                closed.append(self._close(self.last_speech, forced=False))
                self.start = None
            elif end + CHUNK - self.start > longest:  # the next chunk would make it longer than max_turn_s
                closed.append(self._close(end, forced=True))
                self.start, self.last_speech = end, end
        self._trim()
        return [speech for speech in closed if speech is not None]

    def _close(self, end: int, forced: bool) -> Speech | None:
        assert self.start is not None  # only called inside speech
        if end - self.start < round(self.settings.min_turn_s * SAMPLE_RATE):
            return None
        pad = round(self.settings.pad_s * SAMPLE_RATE)
        low = max(self.buffer_start, self.start - pad)
        high = min(self.fed, end + (0 if forced else pad))
        audio = self.buffer[low - self.buffer_start : high - self.buffer_start].copy()
        return Speech(self.start, end, audio, low, forced)

    def _trim(self) -> None:
        """Keep only what an open stretch (or the next one's padding) can still need."""
        pad = round(self.settings.pad_s * SAMPLE_RATE) + CHUNK
        keep_from = self.fed - pad if self.start is None else self.start - pad
        drop = max(0, keep_from - self.buffer_start)
        if drop:
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop


def change_points(embeddings: np.ndarray, window: int, threshold: float) -> list[int]:
    """Segment indices where the speaker changes: peaks of the distance between the mean embeddings of the
    ``window`` segments before and after, above ``threshold``, at least ``window`` apart and from the ends."""
    count = len(embeddings)
    if count < 2 * window:
        return []
    sums = np.concatenate((np.zeros((1, embeddings.shape[1]), np.float32), np.cumsum(embeddings, axis=0)))
    candidates = np.arange(window, count - window + 1)
    left = (sums[candidates] - sums[candidates - window]) / window
    right = (sums[candidates + window] - sums[candidates]) / window
    left /= np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-12)
    right /= np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
    distance = cosine_distance(left, right)
    cuts: list[int] = []
    for position in np.argsort(-distance):
        if distance[position] <= threshold:
            break
        index = int(candidates[position])
        if all(abs(index - cut) >= window for cut in cuts):
            cuts.append(index)
    return sorted(cuts)


def split_at_changes(speech: Speech, embeddings: np.ndarray, settings: TurnSettings,
                     change_distance: float) -> list[Turn]:
    """Cut a stretch of speech at the speaker changes in its segment embeddings (one every ``segment_hop_s``)."""
    if not len(embeddings):
        return []
    window = max(1, round(settings.change_window_s / settings.segment_hop_s))
    cuts = change_points(embeddings, window, change_distance)
    frames = max(1, round(settings.segment_hop_s * 100))
    # the change between segments b - 1 and b is placed midway between where b starts and b - 1 ends
    at = [speech.audio_start + (cut * frames + (SEGMENT_FRAMES - frames) // 2) * HOP for cut in cuts]
    bounds = [0, *cuts, len(embeddings)]
    places = [speech.start, *at, speech.end]
    turns = []
    for index, (low, high) in enumerate(itertools.pairwise(bounds)):
        start, end = places[index], places[index + 1]
        turns.append(Turn(start, end, mean_embedding(embeddings[low:high]), high - low, overlap=bool(cuts)))
    return turns

"""The speakers task's event bodies (docs/events.md and the JSON Schema are generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.events import EventBody


class SpeakerTurn(EventBody):
    """One speaker's turn on a microphone, assigned to a speaker cluster. The event's score is the confidence
    and its source_time the turn's start. Audio is attached only when ``publish_audio`` is set."""

    type = "speaker_turn"
    severity = "info"
    microphone: str = Field(description="the microphone's sensor id")
    cluster: int = Field(description="speaker cluster id, stable per microphone (survives restarts)")
    name: str | None = Field(description="the cluster's name (edge-agent speakers name), null if unnamed")
    start: str = Field(description="start of the turn, source time (ISO 8601 UTC)")
    end: str = Field(description="end of the turn, source time (ISO 8601 UTC)")
    duration_s: float = Field(description="length of the turn, seconds")
    confidence: float = Field(description="0-1: how clearly the turn belongs to its cluster rather than another")
    overlap: bool = Field(description="the turn was cut from speech with a speaker change and no pause inside "
                                      "(an interruption or overlapping speech)")
    new_cluster: bool = Field(description="the turn opened a new cluster")


class SpeakersChanged(EventBody):
    """The clusters of a microphone changed: a new one opened, re-clustering merged or split clusters, or
    the least recently heard one aged out (``max_clusters``)."""

    type = "speakers_changed"
    severity = "info"
    microphone: str = Field(description="the microphone's sensor id")
    change: Literal["new", "merged", "split", "aged_out"] = Field(description="what happened")
    clusters: list[int] = Field(description="the clusters concerned: new: the new one; merged: the one that "
                                "went and the one it went into; split: the one split; aged_out: the one dropped")
    into: int | None = Field(description="the resulting cluster (null for aged_out)")
    names: dict[str, str] = Field(description="names of the clusters concerned, by id")
    count: int = Field(description="clusters on this microphone now")


EVENTS = (SpeakerTurn, SpeakersChanged)

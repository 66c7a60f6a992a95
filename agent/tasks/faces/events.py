"""The faces task's event bodies (docs/events.md and the JSON Schema are generated from these)."""

from __future__ import annotations

from pydantic import Field

from agent.events import EventBody


class _TrackDecision(EventBody):
    track_id: int = Field(description="the camera's track of this face; one decision per track")
    frames: int = Field(description="frames whose embeddings were averaged for the decision")
    at_track_end: bool = Field(description="true when the face left before `decide_after` frames were seen")
    box: list[float] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] of the face in the last "
                                                                      "frame, pixels")
    threshold: float = Field(description="the match_similarity cut the decision used")


class FaceMatched(_TrackDecision):
    """A tracked face is an enrolled person. The event's score is the cosine similarity. No face image is attached
    unless ``attach_face`` is on."""

    type = "face_matched"
    severity = "info"
    identity: str = Field(description="the enrolled name")
    similarity: float = Field(description="cosine similarity of the track's mean embedding to the person's, -1..1")


class FaceUnknown(_TrackDecision):
    """A tracked face matches nobody enrolled. The event's score is the best similarity (null when nobody is
    enrolled). Its embeddings are forgotten when the track ends or after ``retention_s``."""

    type = "face_unknown"
    severity = "warning"
    best_similarity: float | None = Field(description="similarity to the closest enrolled person; null: nobody "
                                                      "is enrolled")
    closest: str | None = Field(description="the closest enrolled name (below the threshold); null: nobody")


EVENTS = (FaceMatched, FaceUnknown)

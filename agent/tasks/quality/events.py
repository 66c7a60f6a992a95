"""The quality task's event bodies (docs/events.md and the JSON Schema are generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.events import EventBody


class DefectLocation(BaseModel):
    """Where the part's defect score peaks."""

    model_config = ConfigDict(extra="forbid")
    box: list[int] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] in frame pixels")
    peak: list[int] = Field(min_length=2, max_length=2, description="[x, y] of the heat map's peak")
    peak_score: float = Field(description="defect probability at the peak")


class FrameSize(BaseModel):
    """The inspected frame's size."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(description="pixels")
    height: int = Field(description="pixels")


class PartInspected(EventBody):
    """One decision per frame: severity info on accept, alarm on reject. The event's score is the part's defect
    score: the classifier's probability tempered by the station's normal once the camera has learned it
    (docs/quality.md), else the classifier's alone (the maximum over tiles). A reject also publishes a JPEG
    crop of the defect area on ``{prefix}/{device}/images/quality/{event_id}``."""

    type = "part_inspected"
    severity = "info (accept) / alarm (reject)"
    part_id: str = Field(description="from the frame's meta, else {sensor}-{seq}")
    decision: Literal["accept", "reject"] = Field(description="the inspection's verdict")
    threshold: float = Field(description="the reject threshold")
    location: DefectLocation = Field(description="where the defect score peaks")
    tiles: int = Field(description="tiles inspected")
    frame: FrameSize = Field(description="frame size")
    station: Literal["off", "learning", "ready"] = Field(
        default="off", description="the camera's station normal: not used, being learned, or tempering the score")
    classifier_score: float = Field(default=0.0, description="the defect classifier's own part score")
    novelty: float | None = Field(
        default=None, description="the frame's most unusual cell for this station (1.0 = as unusual as its most "
                                  "unusual good cell while learning); null unless the station is ready")
    cause: Literal["defect", "novelty"] | None = Field(
        default=None, description="why a reject: a defect the classifier knows, or a cell far more unusual than "
                                  "any good part of this station; null on accept")


class BaselineLearning(EventBody):
    """A camera starts learning its station's normal from its next frames (assumed good parts)."""

    type = "baseline_learning"
    severity = "info"
    frames_needed: int = Field(description="frames the station learns from")
    reason: str = Field(description="new camera, relearn requested, the frame size changed, ...")


class BaselineReady(EventBody):
    """The station's normal is learned; from the next frame it tempers the classifier."""

    type = "baseline_ready"
    severity = "info"
    frames: int = Field(description="frames learned from")
    bank_size: int = Field(description="feature bank entries kept")
    learn_s: float = Field(description="seconds from the first learning frame to ready")


class FalseRejectLearned(EventBody):
    """An operator marked a reject as a false reject (``edge-agent quality false-reject``)."""

    type = "false_reject_learned"
    severity = "info"
    part_id: str = Field(description="the reject's part id")
    cells: int = Field(description="feature cells added to the station's bank; 0 when it could not be taken in")
    reason: str = Field(description="why it could not be taken in; empty when it was")


EVENTS = (PartInspected, BaselineLearning, BaselineReady, FalseRejectLearned)

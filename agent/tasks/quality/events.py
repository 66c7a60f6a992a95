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
    probability (the maximum over tiles). A reject also publishes a JPEG crop of the defect area on
    ``{prefix}/{device}/images/quality/{event_id}``."""

    type = "part_inspected"
    severity = "info (accept) / alarm (reject)"
    part_id: str = Field(description="from the frame's meta, else {sensor}-{seq}")
    decision: Literal["accept", "reject"] = Field(description="the inspection's verdict")
    threshold: float = Field(description="the reject threshold")
    location: DefectLocation = Field(description="where the defect score peaks")
    tiles: int = Field(description="tiles inspected")
    frame: FrameSize = Field(description="frame size")


EVENTS = (PartInspected,)

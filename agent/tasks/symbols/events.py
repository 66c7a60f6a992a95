"""The symbols task's event bodies (docs/events.md and the JSON Schema are generated from these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.events import EventBody


class Symbol(BaseModel):
    """One detected symbol."""

    model_config = ConfigDict(extra="forbid")
    symbol: str = Field(description="class name (DeepScores-like, e.g. noteheadBlack, gClef, rest8th)")
    box: list[float] = Field(min_length=4, max_length=4, description="[x0, y0, x1, y1] in page pixels")
    confidence: float = Field(description="0..1: class agreement times peak watershed energy of the component")


class PageSize(BaseModel):
    """The page image's size."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(description="pixels")
    height: int = Field(description="pixels")


class SymbolsDetected(EventBody):
    """One per page: how many symbols of each class it shows and where each one is. The event's score is the
    number of symbols reported. With ``overlay`` on, a JPEG of the page with the boxes drawn is published on
    ``{prefix}/{device}/images/symbols/{event_id}``."""

    type = "symbols_detected"
    severity = "info"
    page_id: str = Field(description="from the frame's meta, else {sensor}-{seq}")
    total: int = Field(description="symbols reported (confidence >= min_confidence)")
    summary: str = Field(description="one line for consoles: the total and the four most common classes, "
                                     "e.g. '412 symbols: 301 noteheadBlack, 40 augmentationDot, ...'")
    counts: dict[str, int] = Field(description="symbols reported per class")
    detections: list[Symbol] = Field(description="the symbols, most confident first, at most max_listed")
    truncated: bool = Field(description="true when more symbols were found than max_listed")
    min_confidence: float = Field(description="the reporting cut")
    staff_space: float | None = Field(description="estimated staff line distance in page pixels; null: no staves "
                                                  "found (the page is read at its own scale)")
    tiles: int = Field(description="model tiles run")
    page: PageSize = Field(description="page size")


EVENTS = (SymbolsDetected,)

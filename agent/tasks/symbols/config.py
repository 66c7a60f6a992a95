"""Settings of the symbols task."""

from __future__ import annotations

from pydantic import Field

from agent.tasks.base import TaskConfig


class SymbolsConfig(TaskConfig):
    """Settings of the symbols task."""

    report_score: float | None = Field(
        default=None, ge=0, lt=1, description="report detections at least this confident; overrides the manifest")
    max_pixels: int = Field(default=16_000_000, ge=10_000, le=40_000_000,
                            description="reject pages larger than this (width x height), counted with a reason")
    staff_space: float | None = Field(
        default=None, gt=3, le=100,
        description="staff line distance of the pages in pixels; unset: estimated on every page")
    max_listed: int = Field(default=5000, ge=0, le=100_000,
                            description="detections listed in the event at most (the counts are always complete)")
    overlay: bool = Field(default=True, description="attach a JPEG of the page with the boxes drawn")
    overlay_side: int = Field(default=1600, ge=256, le=8000, description="longer side of the overlay JPEG, pixels")
    overlay_quality: int = Field(default=80, ge=30, le=95, description="JPEG quality of the overlay")

"""Settings of the quality task."""

from __future__ import annotations

from pydantic import Field

from agent.tasks.base import TaskConfig


class QualityConfig(TaskConfig):
    """Settings of the quality task."""

    reject_threshold: float | None = Field(
        default=None, gt=0, lt=1, description="reject when the part score exceeds this; overrides the manifest")
    false_reject_target: float | None = Field(
        default=None, gt=0, lt=1,
        description="pick the manifest's validated threshold for this false-reject rate (e.g. 0.005)")
    crop_size: int = Field(default=128, ge=32, le=1024, description="side of the JPEG defect crop, pixels")
    crop_quality: int = Field(default=85, ge=30, le=95, description="JPEG quality of the defect crop")
    tile_batch: int = Field(default=128, ge=1, le=4096, description="tiles per model run")
    box_level: float = Field(default=0.5, gt=0, le=1,
                             description="defect box = hot cells connected to the peak above this share of it")

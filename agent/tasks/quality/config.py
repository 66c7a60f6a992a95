"""Settings of the quality task."""

from __future__ import annotations

from pydantic import Field

from agent.tasks.base import TaskConfig
from models.quality.runtime.station import Gate, StationSettings


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
    station_normal: bool = Field(
        default=False, description="learn each camera's normal appearance from its first learn_frames frames "
                                   "(the parts a station is commissioned with, assumed good) and temper the "
                                   "defect classifier with it (docs/quality.md; off by default: it does not "
                                   "yet reach the issue's figures, and mutes some defects on our own renderer)")
    learn_frames: int = Field(default=100, ge=10, le=200, description="good frames a station learns from")
    bank_size: int = Field(default=1024, ge=64, le=8192,
                           description="feature bank entries per station (memory and time grow with it)")
    novelty_floor: float = Field(default=0.25, ge=0, description="cells at most this unusual for the station "
                                                                "(1.0 = its most unusual good cell) never reject")
    novelty_full: float = Field(default=0.75, gt=0, description="cells this unusual count fully")
    novelty_reject: float = Field(default=2.0, gt=0, description="a cell this unusual rejects the part whatever "
                                                                 "the classifier says")

    def station_settings(self) -> StationSettings:
        return StationSettings(frames=self.learn_frames, bank_size=self.bank_size)

    def gate(self) -> Gate:
        return Gate(floor=self.novelty_floor, full=max(self.novelty_full, self.novelty_floor + 1e-3),
                    reject=self.novelty_reject)

"""Settings of the speakers task: turns, clusters, thresholds (from the model's manifest unless set), privacy."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from agent.tasks.base import ModelPath, TaskConfig
from models.speakers.runtime.clusters import ClusterSettings
from models.speakers.runtime.turns import TurnSettings

#: the thresholds a speakers model's manifest carries (chosen on validation data), each overridable here
THRESHOLDS = ("distance_cut", "assign_distance", "change_distance")


class SpeakersConfig(TaskConfig, TurnSettings, ClusterSettings):
    """Settings of the speakers task (turn and cluster fields and defaults come from the runtime's settings)."""

    model_config = ConfigDict(extra="forbid")
    model: ModelPath | None = Field(default=Path("models/speakers"),
                                    description="speaker embedding model manifest (manifest.yaml) or its folder")
    window_s: float = Field(default=0.5, gt=0, le=10, description="audio handed to the task at a time, seconds "
                            "(turns do not depend on it; shorter lowers latency)")
    hop_s: float = Field(default=0.5, gt=0, le=10, description="must equal window_s: audio is taken once")
    distance_cut: float | None = Field(default=None, gt=0, le=2, description="complete-linkage cut on cosine "
                                       "distance when re-clustering; default: the manifest's")
    assign_distance: float | None = Field(default=None, gt=0, le=2, description="a turn joins the nearest "
                                          "cluster within this cosine distance; default: the manifest's")
    change_distance: float | None = Field(default=None, gt=0, le=2, description="speaker change inside a turn "
                                          "above this cosine distance; default: the manifest's")
    publish_audio: bool = Field(default=False, description="attach each turn's audio (16 kHz WAV) to its "
                                "speaker_turn event; off by default: audio never leaves the device")
    max_clipped_share: float = Field(default=0.25, gt=0, le=1, description="reject windows with a larger share "
                                     "of clipped samples (counted); less is counted per microphone")
    save_interval_s: float = Field(default=60.0, gt=0, le=86_400, description="period of saving cluster state")

    @model_validator(mode="after")
    def _hop_is_window(self) -> SpeakersConfig:
        if abs(self.hop_s - self.window_s) > 1e-9:
            raise ValueError(f"hop_s ({self.hop_s}) must equal window_s ({self.window_s}): the task takes the "
                             "audio once, in order")
        if self.vad_offset > self.vad_onset:
            raise ValueError(f"vad_offset ({self.vad_offset}) must not exceed vad_onset ({self.vad_onset})")
        return self

    def thresholds(self, manifest: dict[str, float]) -> dict[str, float]:
        """Each threshold from this config where set, else from the manifest; ValueError naming what is missing."""
        values = {name: getattr(self, name) if getattr(self, name) is not None else manifest.get(name)
                  for name in THRESHOLDS}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise ValueError(f"the model's manifest has no {', '.join(missing)} under thresholds and the config "
                             "sets none")
        return {name: float(value) for name, value in values.items() if value is not None}

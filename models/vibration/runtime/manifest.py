"""The vibration model's manifest sections, typed: the features it reads and the settings it was evaluated with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.runtime import Manifest
from models.vibration.runtime.monitor import MonitorSettings
from sensors.errors import ModelError


class VibrationPreprocessing(BaseModel):
    """The ``preprocessing`` section of a vibration model's manifest."""

    model_config = ConfigDict(extra="forbid")
    feature_names: list[str] = Field(min_length=1, description="flat feature names, in the model's input order")
    sequence_length: int = Field(ge=1, description="windows per input sequence")
    normalisation: str = Field(default="", description="how features are normalised (prose, for people)")
    spike_removal: bool = Field(default=True, description="spikes are removed before features are computed")


class VibrationManifest:
    """A vibration model's manifest with its sections validated; ModelError says what is wrong."""

    def __init__(self, manifest: Manifest) -> None:
        try:
            self.preprocessing = VibrationPreprocessing.model_validate(manifest.preprocessing)
            #: the monitor settings the model was evaluated with (a subset of MonitorSettings, typed)
            self.evaluated: dict[str, Any] = MonitorSettings.model_validate(manifest.thresholds).model_dump(
                include=set(manifest.thresholds))
        except ValueError as error:
            raise ModelError(f"{manifest.path}: not a vibration model's manifest: {error}") from None

"""Settings of the vibration task: monitor, features, scorer, bearings and per-machine overrides."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.tasks.base import TaskConfig
from models.vibration.runtime.features import FEATURE_NAMES, SELECTED_FEATURES
from models.vibration.runtime.monitor import MonitorSettings
from models.vibration.runtime.scorers import SCORERS, scorer_class
from sensors.bearing import BearingGeometry

_BEARING = BearingGeometry()
#: how a sensor acquires: a continuous stream cut every hop_s, or bursts (snapshots) of one window each
Mode = Literal["continuous", "snapshot"]
#: validate-config warns about a continuous stream whose hop is this many windows or more
FAR_HOP = 10.0


class BearingConfig(BaseModel):
    """Bearing geometry; the defaults are :class:`sensors.bearing.BearingGeometry`'s (the IMS rig's ZA-2115)."""

    model_config = ConfigDict(extra="forbid")
    n_elements: int = Field(default=_BEARING.n_elements, ge=3, le=100, description="number of rolling elements")
    element_diameter: float = Field(default=_BEARING.element_diameter, gt=0,
                                    description="rolling element diameter (any unit)")
    pitch_diameter: float = Field(default=_BEARING.pitch_diameter, gt=0, description="pitch diameter (same unit)")
    contact_angle_deg: float = Field(default=_BEARING.contact_angle_deg, ge=0, lt=90,
                                     description="contact angle, degrees")

    def geometry(self) -> BearingGeometry:
        return BearingGeometry(self.n_elements, self.element_diameter, self.pitch_diameter,
                               self.contact_angle_deg)


class MachineConfig(BaseModel):
    """What differs for the machines whose sensor ids match a pattern."""

    model_config = ConfigDict(extra="forbid")
    bearing: BearingConfig | None = Field(default=None, description="bearing geometry (default: the task's)")
    shaft_hz: float | None = Field(default=None, gt=0, le=1000,
                                   description="known shaft speed, Hz (default: the task's, or estimated)")
    mode: Mode | None = Field(default=None, description="continuous or snapshot (default: the task's)")


class VibrationConfig(TaskConfig, MonitorSettings):
    """Settings of the vibration task (the monitor's fields and defaults come from MonitorSettings)."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    features: list[str] = Field(
        default_factory=lambda: list(SELECTED_FEATURES),
        description="features to monitor per channel (default: those tsfresh selected); a model's manifest "
                    "(preprocessing.feature_names) overrides this")
    scorer: str = Field(default="mahalanobis",
                        description=f"anomaly scorer: one of {', '.join(SCORERS)}; lstm_ae needs `model`")
    mode: Mode = Field(default="continuous",
                       description="continuous: a window of window_s every hop_s; snapshot: the sensor sends bursts "
                                   "(e.g. 1 s every 20 min) and each burst is one window, its first window_s "
                                   "(hop_s is not used); docs/wire-format.md")
    health_interval_s: float = Field(default=60.0, gt=0, le=86_400, description="period of health events")
    save_interval_s: float = Field(default=60.0, gt=0, le=86_400, description="period of saving learnt state")
    max_flat_fraction: float = Field(default=0.05, gt=0, lt=1,
                                     description="reject windows with more repeated samples (dropouts)")
    bearing: BearingConfig | None = Field(
        default=None, description="default bearing geometry; without one (here or per machine) anomalies are "
                                  "raised but no fault type is named (likely_fault: unknown); `bearing: {}` takes "
                                  "the IMS rig's ZA-2115")
    shaft_hz: float | None = Field(default=None, gt=0, le=1000,
                                   description="default shaft speed, Hz; unset: estimated from each window")
    shaft_range_hz: tuple[float, float] = Field(default=(5.0, 120.0),
                                                description="where to look for the shaft speed when estimating")
    machines: dict[str, MachineConfig] = Field(
        default_factory=dict, description="per-machine settings by sensor id pattern (fnmatch); first match wins")

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(FEATURE_NAMES))
        if unknown or not value:
            raise ValueError(f"unknown features {unknown}; known: {', '.join(FEATURE_NAMES)}")
        return value

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(f"unknown scorer {value!r}; known: {', '.join(SCORERS)}")
        return value

    @model_validator(mode="after")
    def _needs_model(self) -> VibrationConfig:
        if self.model is None and scorer_class(self.scorer).needs_model:
            raise ValueError(f"scorer {self.scorer!r} needs a model: set `model` to its manifest "
                             "(e.g. models/vibration/manifest.yaml) or choose a shallow scorer")
        return self

    def machine(self, sensor: str) -> MachineConfig | None:
        """The per-machine settings of the first pattern the sensor id matches, if any."""
        return next((machine for pattern, machine in self.machines.items()
                     if fnmatch.fnmatchcase(sensor, pattern)), None)

    def mode_of(self, sensor: str) -> Mode:
        machine = self.machine(sensor)
        return machine.mode if machine is not None and machine.mode is not None else self.mode

    def bearing_of(self, sensor: str) -> BearingConfig | None:
        """The sensor's bearing geometry: its machine pattern's, else the task's; None if neither is set."""
        machine = self.machine(sensor)
        return machine.bearing if machine is not None and machine.bearing is not None else self.bearing

    def warnings(self) -> list[str]:
        """What validate-config warns about: a continuous hop far longer than the window (a snapshot sensor
        configured the old way, whose baseline would take hop_s x baseline_windows of stream), and sensors
        without a bearing geometry (their alarms name no fault type)."""
        modes = {self.mode} | {machine.mode for machine in self.machines.values() if machine.mode}
        found = []
        if "continuous" in modes and self.hop_s >= FAR_HOP * self.window_s:
            hours = self.hop_s * self.baseline_windows / 3600
            found.append(
                f"hop_s ({self.hop_s:g}) is {self.hop_s / self.window_s:g} x window_s ({self.window_s:g}) on a "
                f"continuous stream: one window per {self.hop_s:g} s of samples, so the baseline "
                f"({self.baseline_windows} windows) takes {hours:.4g} h of samples (years if the sensor sends "
                "short bursts); for a sensor that sends a burst every few minutes set `mode: snapshot` (one "
                "window per burst) and leave hop_s out")
        if self.bearing is None and not all(self.bearing_of(pattern) is not None for pattern in self.sensors):
            found.append("no bearing geometry for some sensors (set `bearing`, or `bearing` per machine pattern "
                         "covering every `sensors` pattern): fault typing needs it, so their anomalies say "
                         "likely_fault: unknown instead of naming a race")
        return found

    def monitor_settings(self, validated: Mapping[str, float] | None = None) -> MonitorSettings:
        """The monitor's settings; those the config leaves unset come from ``validated`` (the model
        manifest's ``thresholds``: what the model was evaluated with) where it has them."""
        fields = MonitorSettings.model_fields
        values: dict[str, Any] = {name: value for name, value in (validated or {}).items() if name in fields}
        values.update({name: getattr(self, name) for name in fields if name in self.model_fields_set
                       or name not in values})
        return MonitorSettings.model_validate(values)

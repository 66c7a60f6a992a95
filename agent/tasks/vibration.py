"""Condition monitoring of rotating machines: vibration windows -> per-machine anomaly events.

Each sensor is one machine.  A new machine needs no human step: the task learns its normal state
from its first ``baseline_windows`` windows (``baseline_learning`` ... ``baseline_ready``), then
scores every window (:class:`models.vibration.monitor.MachineMonitor`) and reports
``anomaly_raised`` (alarm), ``anomaly_updated`` (warning, at most every ``update_interval_s``),
``anomaly_cleared`` (info), and a ``health`` event (0-100) per machine every ``health_interval_s``.
Learnt state lives in one JSON file per sensor in the task's state dir and survives restarts;
deleting a file (``edge-agent reset-baseline SENSOR``) makes the machine learn again.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskConfig, TaskContext
from agent.windowing import Window
from models.runtime import Model
from models.vibration.bearing import BearingGeometry
from models.vibration.features import (
    FEATURE_NAMES,
    SELECTED_FEATURES,
    FeatureSettings,
    column_index,
    feature_names,
    window_features,
)
from models.vibration.monitor import Decision, MachineMonitor, MonitorSettings, StateStore
from models.vibration.scorers import SCORERS, Scorer, make_scorer, scorer_class
from sensors.wire import Kind, SensorMessage


class BearingConfig(BaseModel):
    """Bearing geometry; the defaults are the IMS rig's Rexnord ZA-2115."""

    model_config = ConfigDict(extra="forbid")
    n_elements: int = Field(default=16, ge=3, le=100, description="number of rolling elements")
    element_diameter: float = Field(default=0.331, gt=0, description="rolling element diameter (any unit)")
    pitch_diameter: float = Field(default=2.815, gt=0, description="pitch diameter (same unit)")
    contact_angle_deg: float = Field(default=15.17, ge=0, lt=90, description="contact angle, degrees")

    def geometry(self) -> BearingGeometry:
        return BearingGeometry(self.n_elements, self.element_diameter, self.pitch_diameter,
                               self.contact_angle_deg)


class MachineConfig(BaseModel):
    """What differs for the machines whose sensor ids match a pattern."""

    model_config = ConfigDict(extra="forbid")
    bearing: BearingConfig | None = Field(default=None, description="bearing geometry (default: the task's)")
    shaft_hz: float | None = Field(default=None, gt=0, le=1000,
                                   description="known shaft speed, Hz (default: the task's, or estimated)")


MONITOR_FIELDS = ("baseline_windows", "folds", "ewma_alpha", "threshold_quantile", "threshold_margin", "k", "n",
                  "clear_ratio", "clear_windows", "update_interval_s", "score_cap", "scale_floor")


class VibrationConfig(TaskConfig):
    """Settings of the vibration task."""

    features: list[str] = Field(
        default_factory=lambda: list(SELECTED_FEATURES),
        description="features to monitor per channel (default: those tsfresh selected); a model's manifest "
                    "(preprocessing.feature_names) overrides this")
    scorer: str = Field(default="mahalanobis",
                        description=f"anomaly scorer: one of {', '.join(SCORERS)}; lstm_ae needs `model`")
    baseline_windows: int = Field(default=120, ge=10, le=100_000,
                                  description="windows of a new machine's data that define its normal state")
    folds: int = Field(default=5, ge=2, le=20, description="out-of-fold splits that calibrate the threshold")
    ewma_alpha: float = Field(default=0.3, gt=0, le=1, description="smoothing of the score (1 = none)")
    threshold_quantile: float = Field(default=0.99, gt=0.5, lt=1,
                                      description="quantile of the smoothed baseline scores the threshold starts from")
    threshold_margin: float = Field(default=2.0, ge=1, le=100,
                                    description="threshold = median + margin x (quantile - median) of baseline scores "
                                                "(2.0: the smallest without false alarms on the validation fleet)")
    scale_floor: float = Field(default=0.002, gt=0, le=10,
                               description="floor under each feature's baseline spread (normalised units), so a "
                                           "near-constant feature cannot turn tiny drifts into huge z-scores")
    k: int = Field(default=3, ge=1, le=1000, description="raise when k of the last n windows exceed the threshold")
    n: int = Field(default=5, ge=1, le=1000, description="see k")
    clear_ratio: float = Field(default=0.7, ge=0, le=1,
                               description="clear below median + clear_ratio x (threshold - median) ...")
    clear_windows: int = Field(default=10, ge=1, le=100_000, description="... for this many windows in a row")
    score_cap: float = Field(default=3.0, ge=1, le=1000,
                             description="cap on one window's score, in threshold distances from normal")
    update_interval_s: float = Field(default=60.0, ge=0, le=86_400,
                                     description="least time between anomaly_updated events of a machine")
    health_interval_s: float = Field(default=60.0, gt=0, le=86_400, description="period of health events")
    save_interval_s: float = Field(default=60.0, gt=0, le=86_400, description="period of saving learnt state")
    max_flat_fraction: float = Field(default=0.05, gt=0, lt=1,
                                     description="reject windows with more repeated samples (dropouts)")
    bearing: BearingConfig = Field(default_factory=BearingConfig, description="default bearing geometry")
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
    def _consistent(self) -> VibrationConfig:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        if self.baseline_windows < 2 * self.folds:
            raise ValueError(f"baseline_windows ({self.baseline_windows}) must be at least 2 x folds ({self.folds})")
        if self.model is None and scorer_class(self.scorer).needs_model:
            raise ValueError(f"scorer {self.scorer!r} needs a model: set `model` to its manifest "
                             "(e.g. models/vibration/manifest.yaml) or choose a shallow scorer")
        return self

    def monitor_settings(self, validated: Mapping[str, float] | None = None) -> MonitorSettings:
        """The monitor's settings; those the config leaves unset come from ``validated`` (the model
        manifest's ``thresholds``: what the model was evaluated with) where it has them."""
        values: dict[str, Any] = {name: getattr(self, name) for name in MONITOR_FIELDS}
        for name, value in (validated or {}).items():
            if name in values and name not in self.model_fields_set:
                values[name] = type(values[name])(value)
        return MonitorSettings(**values)


@dataclass
class _Machine:
    """The task's bookkeeping for one sensor around its monitor."""

    monitor: MachineMonitor
    settings: FeatureSettings
    #: where the monitored features sit in the full feature vector
    columns: np.ndarray
    saved: bool = False
    last: Decision | None = None
    last_time_ns: int = 0
    shaft_hz: float = 0.0
    raised_ns: int | None = None
    windows: int = 0
    rejected: int = 0
    spikes: int = 0
    notes: list[str] = field(default_factory=list)


class VibrationTask(Task):
    """Vibration windows -> baseline, anomaly and health events, one machine per sensor."""

    name = "vibration"
    kinds = frozenset({Kind.VIBRATION})
    config_type = VibrationConfig

    def __init__(self, config: TaskConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        if not isinstance(config, VibrationConfig):
            raise TypeError(f"vibration needs a VibrationConfig, got {type(config).__name__}")
        self.settings = config
        self.model: Model | None = None
        if scorer_class(config.scorer).needs_model:
            if config.model is None:
                raise ValueError(f"vibration: scorer {config.scorer!r} needs a model; set `model` to its manifest")
            self.model = context.load_model(config.model)
        self.model_ref = (ModelRef(self.model.manifest.name, self.model.manifest.version) if self.model
                          else ModelRef(config.scorer, "builtin"))
        self.store = StateStore(context.state_dir)
        self.machines: dict[str, _Machine] = {}
        self.last_health = time.monotonic()
        self.last_save = time.monotonic()

    def models(self) -> list[ModelRef]:
        return [self.model_ref]

    def _new_scorer(self) -> Scorer:
        return make_scorer(self.settings.scorer, self.model)

    def _feature_settings(self, sensor: str) -> FeatureSettings:
        config = self.settings
        bearing, shaft = config.bearing, config.shaft_hz
        for pattern, machine in config.machines.items():
            if fnmatch.fnmatchcase(sensor, pattern):
                bearing, shaft = machine.bearing or bearing, machine.shaft_hz or shaft
                break
        return FeatureSettings(geometry=bearing.geometry(), shaft_hz=shaft, shaft_range_hz=config.shaft_range_hz)

    def _fingerprint(self, window: Window) -> dict[str, Any]:
        return {"scorer": self.model_ref.name, "model_version": self.model_ref.version,
                "sample_rate": window.sample_rate, "window_samples": len(window.samples)}

    def _names(self, channels: int) -> list[str]:
        """The monitored features' flat names: the model's inputs if it names them, else the configured ones."""
        if self.model is not None and "feature_names" in self.model.manifest.preprocessing:
            names = [str(name) for name in self.model.manifest.preprocessing["feature_names"]]
            try:
                column_index(channels, names)
            except ValueError as error:
                raise RejectedInput(f"the model's features do not fit this stream: {error}") from None
            return names
        return feature_names(channels, self.settings.features)

    def _machine(self, window: Window) -> _Machine:
        """The machine's monitor, resumed from its saved state or new; relearns if the stream changed."""
        sensor = window.sensor_id
        names = self._names(window.samples.shape[1])
        fingerprint = self._fingerprint(window)
        machine = self.machines.get(sensor)
        if machine is not None and machine.monitor.fingerprint == fingerprint and machine.monitor.names == names:
            return machine
        validated = self.model.manifest.thresholds if self.model is not None else None
        monitor = MachineMonitor(sensor, names, self._new_scorer, self.settings.monitor_settings(validated),
                                 fingerprint)
        note = "new machine"
        if machine is not None:
            note = "the stream's sample rate, window or channels changed"
        else:
            saved = self.store.load(sensor)
            if saved is not None:
                try:
                    monitor.load_state(saved)
                    note = ""
                except ValueError as error:
                    note = f"saved state not usable: {error}"
        self.machines[sensor] = machine = _Machine(monitor, self._feature_settings(sensor),
                                                   column_index(window.samples.shape[1], names), saved=not note)
        if note:
            self.context.log.info("learning normal state", sensor=sensor, reason=note)
            machine.notes.append(note)
        else:
            self.context.log.info("resumed learnt state", sensor=sensor, learning=monitor.learning)
        return machine

    def process(self, item: SensorMessage | Window) -> list[EventDraft]:
        if not isinstance(item, Window):
            raise RejectedInput("vibration takes windows of a continuous stream, not frames")
        machine = self._machine(item)
        machine.windows += 1
        try:
            vector, shaft, spikes = window_features(item.samples, item.sample_rate, machine.settings,
                                                    self.settings.max_flat_fraction)
        except ValueError as error:  # UnusableWindow, or a window too short for the shaft speed
            machine.rejected += 1
            raise RejectedInput(f"{item.sensor_id}: {error}") from None
        machine.spikes += spikes
        machine.shaft_hz = shaft
        decision = machine.monitor.update(vector[machine.columns], item.start_ns)
        machine.last, machine.last_time_ns = decision, item.start_ns
        draft = self._draft(item.sensor_id, machine, decision)
        if decision.transition in ("baseline_ready", "raised", "cleared"):
            self._save(item.sensor_id, machine)
        return [] if draft is None else [draft]

    def _draft(self, sensor: str, machine: _Machine, decision: Decision) -> EventDraft | None:
        settings = self.settings
        transition = decision.transition
        if transition is None:
            return None
        monitor = machine.monitor
        if transition == "baseline_learning":
            reason = machine.notes.pop() if machine.notes else "new machine"
            return EventDraft("baseline_learning", sensor, decision.time_ns, "info", None, self.model_ref,
                              {"windows_needed": settings.baseline_windows, "window_s": settings.window_s,
                               "scorer": settings.scorer, "reason": reason})
        if transition == "baseline_ready":
            return EventDraft("baseline_ready", sensor, decision.time_ns, "info", decision.threshold,
                              self.model_ref,
                              {"windows": decision.collected, "threshold": decision.threshold,
                               "scorer": settings.scorer, "features": len(monitor.names),
                               "shaft_hz": round(machine.shaft_hz, 2)})
        if transition == "cleared":
            started = machine.raised_ns
            machine.raised_ns = None
            return EventDraft("anomaly_cleared", sensor, decision.time_ns, "info", decision.smoothed,
                              self.model_ref,
                              {"score": decision.smoothed, "threshold": decision.threshold,
                               "duration_s": None if started is None else (decision.time_ns - started) / 1e9})
        if transition == "raised":
            machine.raised_ns = decision.time_ns
        return EventDraft("anomaly_raised" if transition == "raised" else "anomaly_updated", sensor,
                          decision.time_ns, "alarm" if transition == "raised" else "warning",
                          decision.smoothed, self.model_ref, self._anomaly_body(machine, decision))

    def _anomaly_body(self, machine: _Machine, decision: Decision) -> dict[str, Any]:
        assert decision.z is not None  # monitoring decisions carry z-scores
        monitor = machine.monitor
        fault, evidence = monitor.likely_fault(decision.z)
        frequencies = machine.settings.geometry.frequencies(machine.shaft_hz)
        return {
            "level": decision.level,
            "score": decision.smoothed,
            "threshold": decision.threshold,
            "health": round(decision.health, 1),
            "top_features": monitor.top_features(decision.z),
            "likely_fault": fault,
            "fault_evidence_z": evidence,
            "shaft_hz": round(machine.shaft_hz, 2),
            "fault_frequencies_hz": {name: round(value, 2) for name, value in frequencies.items()},
        }

    def tick(self, now_ns: int) -> list[EventDraft]:
        now = time.monotonic()
        self._notice_resets()
        if now - self.last_save >= self.settings.save_interval_s:
            self.last_save = now
            for sensor, machine in self.machines.items():
                self._save(sensor, machine)
        if now - self.last_health < self.settings.health_interval_s:
            return []
        self.last_health = now
        return [self._health(sensor, machine) for sensor, machine in self.machines.items()]

    def _health(self, sensor: str, machine: _Machine) -> EventDraft:
        decision, monitor = machine.last, machine.monitor
        if monitor.learning:
            state, health = "learning", None
        else:
            state = "anomaly" if decision is not None and decision.alarm else "normal"
            health = round(decision.health, 1) if decision is not None and decision.smoothed is not None else 100.0
        body = {"health": health, "state": state, "windows": machine.windows, "rejected": machine.rejected,
                "spikes_removed": machine.spikes, "shaft_hz": round(machine.shaft_hz, 2),
                "score": None if decision is None else decision.smoothed,
                "threshold": None if monitor.learning else monitor.threshold}
        if monitor.learning:
            body["baseline_progress"] = len(monitor.baseline) / monitor.settings.baseline_windows
        machine.windows = machine.rejected = machine.spikes = 0
        return EventDraft("health", sensor, machine.last_time_ns or time.time_ns(), "info", health,
                          self.model_ref, body)

    def _notice_resets(self) -> None:
        """A machine whose saved file vanished was reset (reset-baseline): forget it, learn again."""
        for sensor, machine in list(self.machines.items()):
            if machine.saved and not self.store.path(sensor).exists():
                self.context.log.info("baseline was reset; learning again", sensor=sensor)
                machine.monitor.reset()
                machine.saved = False
                machine.last = None
                machine.raised_ns = None
                machine.notes.append("baseline reset")

    def _save(self, sensor: str, machine: _Machine) -> None:
        try:
            self.store.save(sensor, machine.monitor.state())
            machine.saved = True
        except OSError as error:
            self.context.log.error("cannot save learnt state", sensor=sensor, error=str(error))

    def close(self) -> None:
        self._notice_resets()
        for sensor, machine in self.machines.items():
            self._save(sensor, machine)
        if self.model is not None:
            self.model.close()

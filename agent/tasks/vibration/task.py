"""Condition monitoring of rotating machines: vibration windows -> per-machine anomaly events.

Each sensor is one machine.  A new machine needs no human step: the task learns its normal state
from its first ``baseline_windows`` windows (``baseline_learning`` ... ``baseline_ready``), then
scores every window (:class:`models.vibration.runtime.monitor.MachineMonitor`) and reports
``anomaly_raised`` (alarm), ``anomaly_updated`` (warning, at most every ``update_interval_s``),
``anomaly_cleared`` (info), and a ``health`` event (0-100) per machine every ``health_interval_s``.
Learnt state lives in one JSON file per sensor in the task's state dir and survives restarts;
deleting a file (``edge-agent reset-baseline SENSOR``) makes the machine learn again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.events import EventDraft, ModelRef
from agent.tasks.base import RejectedInput, Task, TaskContext
from agent.tasks.vibration import events
from agent.tasks.vibration.commands import COMMANDS
from agent.tasks.vibration.config import VibrationConfig
from agent.tasks.vibration.events import AnomalyRaised
from agent.tasks.vibration.simulate import VibrationSimulation
from agent.windowing import Window
from models.runtime import Model
from models.vibration.runtime.envelope import envelope_peak, family_fault, fault_families, fault_lines
from models.vibration.runtime.features import (
    FeatureSettings,
    UnusableWindow,
    column_index,
    feature_names,
    remove_spikes,
    window_features,
)
from models.vibration.runtime.manifest import VibrationManifest
from models.vibration.runtime.monitor import Decision, MachineMonitor, StateStore
from models.vibration.runtime.scorers import Scorer, make_scorer, scorer_class
from models.vibration.runtime.shaft import SHAFT_ESTIMATOR
from sensors.bearing import FAULT_TYPES, BearingGeometry
from sensors.errors import ConfigError, StateError
from sensors.wire import Kind, SensorMessage


@dataclass
class _Machine:
    """The task's bookkeeping for one sensor around its monitor."""

    monitor: MachineMonitor
    settings: FeatureSettings
    #: where the monitored features sit in the full feature vector
    columns: np.ndarray
    saved: bool = False
    #: whether its bearing geometry is configured (else no fault type is named from a default bearing)
    bearing_known: bool = True
    last: Decision | None = None
    last_time_ns: int = 0
    shaft_hz: float = 0.0
    raised_ns: int | None = None
    #: the alarm's events have named a fault type (an update comes as soon as one is named)
    named: bool = False
    windows: int = 0
    rejected: int = 0
    spikes: int = 0
    notes: list[str] = field(default_factory=list)


class VibrationTask(Task[VibrationConfig]):
    """Vibration windows -> baseline, anomaly and health events, one machine per sensor."""

    name = "vibration"
    kinds = frozenset({Kind.VIBRATION})
    config_type = VibrationConfig
    events = events.EVENTS
    simulation = VibrationSimulation
    commands = COMMANDS

    def __init__(self, config: VibrationConfig, context: TaskContext) -> None:
        super().__init__(config, context)
        path = self._needed_model(config)
        self.model: Model | None = None if path is None else context.load_model(path)
        self.typed = VibrationManifest(self.model.manifest) if self.model is not None else None
        self.model_ref = (ModelRef(self.model.manifest.name, self.model.manifest.version) if self.model
                          else ModelRef(config.scorer, "builtin"))
        self.store = StateStore(context.state_dir)
        self.machines: dict[str, _Machine] = {}
        self.last_health = time.monotonic()
        self.last_save = time.monotonic()

    @classmethod
    def check(cls, config: VibrationConfig) -> None:
        """The model the scorer needs is there, loads, and is a vibration model's."""
        from models.runtime import load_manifest

        path = cls._needed_model(config)
        if path is not None:
            VibrationManifest(load_manifest(path))

    @staticmethod
    def _needed_model(config: VibrationConfig) -> Path | None:
        """The manifest the configured scorer needs (None for a shallow scorer); ConfigError if it is not set."""
        if not scorer_class(config.scorer).needs_model:
            return None
        if config.model is None:
            raise ConfigError(f"vibration: scorer {config.scorer!r} needs a model; set `model` to its manifest")
        return config.model

    def models(self) -> list[ModelRef]:
        return [self.model_ref]

    def _new_scorer(self) -> Scorer:
        return make_scorer(self.config.scorer, self.model)

    @classmethod
    def warnings(cls, config: VibrationConfig) -> list[str]:
        return config.warnings()

    def snapshot_stream(self, sensor: str) -> bool:
        return self.config.mode_of(sensor) == "snapshot"

    def _feature_settings(self, sensor: str) -> FeatureSettings:
        """The machine's features: its bearing's fault frequencies (the default bearing's when none is configured:
        the model's envelope features need some, but then no fault type is named) and its shaft speed."""
        config = self.config
        bearing, machine = config.bearing_of(sensor), config.machine(sensor)
        shaft = (machine.shaft_hz or config.shaft_hz) if machine is not None else config.shaft_hz
        return FeatureSettings(geometry=bearing.geometry() if bearing is not None else BearingGeometry(),
                               shaft_hz=shaft, shaft_range_hz=config.shaft_range_hz)

    def _fingerprint(self, window: Window) -> dict[str, Any]:
        fingerprint = {"scorer": self.model_ref.name, "model_version": self.model_ref.version,
                       "sample_rate": window.sample_rate, "window_samples": len(window.samples)}
        if self._feature_settings(window.sensor_id).shaft_hz is None:
            # A baseline learnt with another shaft speed estimator measured its 1x, 2x and fault lines
            # at other frequencies (half speed, the hum): relearn.  Only here, so that machines with a
            # configured speed keep their learnt state.
            fingerprint["shaft_estimator"] = SHAFT_ESTIMATOR
        return fingerprint

    def _names(self, channels: int) -> list[str]:
        """The monitored features' flat names: the model's inputs if it names them, else the configured ones."""
        if self.typed is not None:
            names = self.typed.preprocessing.feature_names
            try:
                column_index(channels, names)
            except UnusableWindow as error:
                raise RejectedInput(f"the model's features do not fit this stream: {error}") from None
            return names
        return feature_names(channels, self.config.features)

    def _machine(self, window: Window) -> _Machine:
        """The machine's monitor, resumed from its saved state or new; relearns if the stream changed."""
        sensor = window.sensor_id
        names = self._names(window.samples.shape[1])
        fingerprint = self._fingerprint(window)
        machine = self.machines.get(sensor)
        if machine is not None and machine.monitor.fingerprint == fingerprint and machine.monitor.names == names:
            return machine
        validated = self.typed.evaluated if self.typed is not None else None
        monitor = MachineMonitor(sensor, names, self._new_scorer, self.config.monitor_settings(validated),
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
                except StateError as error:  # a bug's ValueError must surface, not pass for a stale file
                    note = f"saved state not usable: {error}"
        self.machines[sensor] = machine = _Machine(monitor, self._feature_settings(sensor),
                                                   column_index(window.samples.shape[1], names), saved=not note,
                                                   bearing_known=self.config.bearing_of(sensor) is not None)
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
                                                    self.config.max_flat_fraction)
        except UnusableWindow as error:  # a dropout, or a window too short for the shaft speed
            machine.rejected += 1
            raise RejectedInput(f"{item.sensor_id}: {error}") from None
        machine.spikes += spikes
        machine.shaft_hz = shaft
        decision = machine.monitor.update(vector[machine.columns], item.start_ns)
        machine.last, machine.last_time_ns = decision, item.start_ns
        draft = self._draft(item.sensor_id, machine, decision, item)
        if decision.transition in ("baseline_ready", "raised", "cleared"):
            self._save(item.sensor_id, machine)
        return [] if draft is None else [draft]

    def _draft(self, sensor: str, machine: _Machine, decision: Decision, window: Window) -> EventDraft | None:
        settings = self.config
        transition = decision.transition
        if transition is None:
            return self._fault_named(sensor, machine, decision, window)
        monitor = machine.monitor
        if transition == "baseline_learning":
            reason = machine.notes.pop() if machine.notes else "new machine"
            return events.BaselineLearning(
                windows_needed=monitor.settings.baseline_windows, window_s=settings.window_s,
                mode=settings.mode_of(sensor), scorer=settings.scorer, reason=reason,
            ).draft(sensor, decision.time_ns, "info", None, self.model_ref)
        if transition == "baseline_ready":
            assert decision.threshold is not None  # a ready baseline has a threshold
            return events.BaselineReady(
                windows=decision.collected, span_s=round(monitor.baseline_span_s, 3), threshold=decision.threshold,
                scorer=settings.scorer,
                features=len(monitor.names), shaft_hz=round(machine.shaft_hz, 2),
            ).draft(sensor, decision.time_ns, "info", decision.threshold, self.model_ref)
        if transition == "cleared":
            started = machine.raised_ns
            machine.raised_ns, machine.named = None, False
            return events.AnomalyCleared(
                score=decision.smoothed, threshold=decision.threshold,
                duration_s=None if started is None else (decision.time_ns - started) / 1e9,
            ).draft(sensor, decision.time_ns, "info", decision.smoothed, self.model_ref)
        if transition == "raised":
            machine.raised_ns = decision.time_ns
        body = self._anomaly_body(machine, decision, events.AnomalyRaised if transition == "raised"
                                  else events.AnomalyUpdated, window)
        machine.named = body.likely_fault not in (None, "unknown")
        return body.draft(sensor, decision.time_ns, "alarm" if transition == "raised" else "warning",
                          decision.smoothed, self.model_ref)

    def _fault_named(self, sensor: str, machine: _Machine, decision: Decision, window: Window) -> EventDraft | None:
        """During an alarm whose fault is not named yet, an ``anomaly_updated`` as soon as the evidence names it
        (news worth more than the update rate limit: the alarm is often raised before a race stands out)."""
        if not (decision.alarm and machine.bearing_known and not machine.named and decision.z is not None):
            return None
        body = self._anomaly_body(machine, decision, events.AnomalyUpdated, window)
        if body.likely_fault in (None, "unknown"):
            return None
        machine.named = True
        return body.draft(sensor, decision.time_ns, "warning", decision.smoothed, self.model_ref)

    def _anomaly_body(self, machine: _Machine, decision: Decision, kind: type[AnomalyRaised],
                      window: Window) -> AnomalyRaised:
        assert decision.z is not None  # monitoring decisions carry z-scores
        monitor = machine.monitor
        fault: str | None
        peak, families = None, {}
        samples = remove_spikes(window.samples)[0]
        if machine.bearing_known:
            frequencies = machine.settings.geometry.frequencies(machine.shaft_hz)
            families = fault_families(samples, window.sample_rate, fault_lines(frequencies),
                                      machine.settings.envelope_band)
            z_fault, evidence = monitor.likely_fault(decision.z)
            # the window's own harmonic family first (physics, the same on any machine), then the features'
            # deviation from this machine's normal, else no guess
            named = family_fault(families)
            fault = FAULT_TYPES[named] if named else z_fault or "unknown"
        else:  # the envelope features sit at a default bearing's frequencies: they name no race of this one
            fault, evidence, frequencies = "unknown", {}, {}
            peak = envelope_peak(samples, window.sample_rate, machine.shaft_hz, machine.settings.envelope_band)
        return kind.model_validate({
            "level": decision.level,
            "score": decision.smoothed,
            "threshold": decision.threshold,
            "health": round(decision.health, 1),
            "top_features": monitor.top_features(decision.z),
            "likely_fault": fault,
            "fault_evidence_z": evidence,
            "shaft_hz": round(machine.shaft_hz, 2),
            "fault_frequencies_hz": {name: round(value, 2) for name, value in frequencies.items()},
            "envelope_peak": None if peak is None else dataclasses.asdict(peak),
            "envelope_families": families,
        })

    def tick(self, now_ns: int) -> list[EventDraft]:
        now = time.monotonic()
        self._notice_resets()
        if now - self.last_save >= self.config.save_interval_s:
            self.last_save = now
            for sensor, machine in self.machines.items():
                self._save(sensor, machine)
        if now - self.last_health < self.config.health_interval_s:
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
        body = events.Health(
            health=health, state=state, windows=machine.windows, rejected=machine.rejected,
            spikes_removed=machine.spikes, shaft_hz=round(machine.shaft_hz, 2),
            score=None if decision is None else decision.smoothed,
            threshold=None if monitor.learning else monitor.threshold,
            baseline_progress=len(monitor.baseline) / monitor.settings.baseline_windows if monitor.learning else None)
        machine.windows = machine.rejected = machine.spikes = 0
        return body.draft(sensor, machine.last_time_ns or time.time_ns(), "info", health, self.model_ref)

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

    def forget(self, sensor: str) -> None:
        machine = self.machines.pop(sensor, None)
        if machine is not None:  # its learnt state is saved, so it resumes if the sensor comes back
            self._save(sensor, machine)

    def close(self) -> None:
        self._notice_resets()
        for sensor, machine in self.machines.items():
            self._save(sensor, machine)
        if self.model is not None:
            self.model.close()

"""Per-machine normal-state learning and alarm logic, the same offline (evaluation) and in the agent.

A :class:`MachineMonitor` takes one feature vector per window.  While learning it collects the
first ``baseline_windows`` vectors; then it learns a per-feature normalisation (z-scores, on a log
scale for positive features), fits the scorer, and sets the alarm threshold from out-of-fold scores
of the baseline (k-fold, so the threshold is not fitted to scores the scorer has memorised).
Monitoring: features -> normalise -> history -> scorer -> EWMA smoothing -> k-of-n exceedances ->
raised / updated (rate-limited in source time and in windows) / cleared (with hysteresis).  The learnt
state is a JSON-able dict; :class:`StateStore` keeps one file per sensor, written atomically.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.vibration.runtime.features import LOG_FEATURES
from models.vibration.runtime.scorers import Scorer
from sensors.bearing import FAULT_TYPES
from sensors.errors import StateError
from sensors.files import write_json_atomic

STATE_VERSION = 1
Transition = Literal["baseline_learning", "baseline_ready", "raised", "updated", "cleared"]
#: the envelope features whose z-scores name a likely fault type
FAULT_EVIDENCE = ("env_bpfo", "env_bpfi", "env_bsf")


class MonitorSettings(BaseModel):
    """How the normal state is learnt and when an anomaly is raised and cleared.

    The one definition of these defaults: the vibration task's config inherits these fields, the
    evaluation starts from them, and the model card quotes them from here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    baseline_windows: int = Field(default=216, ge=10, le=100_000,
                                  description="windows of a new machine's data that define its normal state "
                                              "(216: 3 days of 20-min snapshots, so that it sees several load "
                                              "levels; 40 h saw one to three and load steps raised alarms)")
    folds: int = Field(default=5, ge=2, le=20, description="out-of-fold splits that calibrate the threshold")
    ewma_alpha: float = Field(default=0.3, gt=0, le=1, description="smoothing of the score (1 = none)")
    threshold_quantile: float = Field(default=0.99, gt=0.5, lt=1,
                                      description="quantile of the smoothed baseline scores the threshold starts from")
    threshold_margin: float = Field(default=2.0, ge=1, le=100,
                                    description="threshold = median + margin x (quantile - median) of baseline scores "
                                                "(2.0: the smallest without false alarms on the validation fleet)")
    k: int = Field(default=3, ge=1, le=1000, description="raise when k of the last n windows exceed the threshold")
    n: int = Field(default=5, ge=1, le=1000, description="see k")
    clear_ratio: float = Field(default=0.7, ge=0, le=1,
                               description="clear below median + clear_ratio x (threshold - median) ...")
    clear_windows: int = Field(default=10, ge=1, le=100_000, description="... for this many windows in a row")
    update_interval_s: float = Field(default=60.0, ge=0, le=86_400,
                                     description="least source time between anomaly_updated events of a machine")
    update_windows: int = Field(default=12, ge=1, le=100_000,
                                description="... and least windows between them (12: at most one every 4 h of "
                                            "20-min snapshots; a continuous stream meets update_interval_s first)")
    score_cap: float = Field(default=3.0, ge=1, le=1000,
                             description="cap on one window's score, in threshold distances from normal, so one "
                                         "wild window cannot hold the smoothed score up for long")
    scale_floor: float = Field(default=0.002, gt=0, le=10,
                               description="floor under each feature's baseline spread (normalised units), so a "
                                           "near-constant feature cannot turn tiny drifts into huge z-scores "
                                           "(0.002: chosen on the validation fleet)")
    top_features: int = Field(default=5, ge=1, le=100, description="deviating features named in an anomaly event")
    fault_z: float = Field(default=4.0, gt=0, description="z-score an envelope feature must exceed to name a "
                                                          "likely fault type")

    @model_validator(mode="after")
    def _consistent(self) -> MonitorSettings:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        if self.baseline_windows < 2 * self.folds:
            raise ValueError(f"baseline_windows ({self.baseline_windows}) must be at least 2 x folds ({self.folds})")
        return self


@dataclass
class Decision:
    """What one window did to a machine's monitor."""

    time_ns: int
    phase: Literal["learning", "monitoring"]
    transition: Transition | None = None
    score: float | None = None
    smoothed: float | None = None
    threshold: float | None = None
    alarm: bool = False
    #: normalised (z-scored) features of this window; None while learning
    z: np.ndarray | None = None
    #: learning progress (windows collected of baseline_windows)
    collected: int = 0
    #: how far the smoothed score is above normal: 0 at the baseline's median, 1 at the threshold
    excess: float = 0.0

    @property
    def health(self) -> float:
        """100 = like the baseline, 50 at the threshold, falling towards 0 beyond it."""
        return 100.0 / (1.0 + max(self.excess, 0.0) ** 2)

    @property
    def level(self) -> Literal["low", "medium", "high"]:
        """How far past the threshold: under 1.5x its distance from normal, under 2.5x, beyond."""
        return "low" if self.excess < 1.5 else "medium" if self.excess < 2.5 else "high"


class Normaliser:
    """Per-feature z-scores learnt from the baseline; positive, decade-spanning features on a log scale."""

    def __init__(self, names: list[str], scale_floor: float) -> None:
        self.names = names
        self.log_mask = np.array([name.rpartition(".")[2] in LOG_FEATURES for name in names])
        self.scale_floor = scale_floor
        self.mean = np.zeros(len(names))
        self.scale = np.ones(len(names))

    def _transform(self, raw: np.ndarray) -> np.ndarray:
        values = np.array(raw, dtype=np.float64)
        values[..., self.log_mask] = np.log(np.maximum(values[..., self.log_mask], 1e-12))
        return values

    def fit(self, raw: np.ndarray) -> None:
        values = self._transform(raw)
        self.mean = values.mean(axis=0)
        self.scale = np.maximum(values.std(axis=0), self.scale_floor)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return (self._transform(raw) - self.mean) / self.scale

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)
        if self.mean.shape != (len(self.names),) or self.scale.shape != self.mean.shape:
            raise ValueError(f"normaliser state has {self.mean.shape} features, expected {len(self.names)}")


def ewma(values: np.ndarray, alpha: float, start: float | None = None) -> np.ndarray:
    """Exponentially weighted moving average, starting from ``start`` (default: the first value)."""
    out = np.empty(len(values))
    level = float(values[0]) if start is None else start
    for i, value in enumerate(values):
        level = alpha * float(value) + (1 - alpha) * level
        out[i] = level
    return out


@dataclass
class _Alarm:
    """The alarm state machine's memory; persisted with the learnt state."""

    smoothed: float = 0.0
    alarm: bool = False
    exceed: deque[bool] = field(default_factory=deque)
    below: int = 0
    last_report_ns: int = 0
    #: windows since the alarm was raised or last updated
    since_report: int = 0


class MachineMonitor:
    """One machine: learns its normal state from its first windows, then scores and decides on each."""

    def __init__(self, sensor_id: str, names: list[str], scorer_factory: Callable[[], Scorer],
                 settings: MonitorSettings | None = None, fingerprint: dict[str, Any] | None = None) -> None:
        self.sensor_id = sensor_id
        self.names = names
        self.scorer_factory = scorer_factory
        self.settings = settings or MonitorSettings()
        #: what the learnt state depends on (scorer, features, rate...); a mismatch on load means relearn
        self.fingerprint = fingerprint or {}
        self.reset()

    def reset(self) -> None:
        """Forget the learnt state and start learning again from the next window."""
        self.baseline: list[np.ndarray] = []
        #: source time of the first and the last baseline window (the baseline's span in time)
        self.baseline_times: tuple[int, int] = (0, 0)
        self.normaliser = Normaliser(self.names, self.settings.scale_floor)
        self.scorer: Scorer | None = None
        self.threshold = math.inf
        self.median = 0.0
        self.history: deque[np.ndarray] = deque()
        self.alarm_state = _Alarm(exceed=deque(maxlen=self.settings.n))
        self.baseline_scores: np.ndarray = np.zeros(0)

    @property
    def learning(self) -> bool:
        return self.scorer is None

    @property
    def baseline_span_s(self) -> float:
        """Source time from the first to the latest baseline window, seconds (0 before the second)."""
        return (self.baseline_times[1] - self.baseline_times[0]) / 1e9

    def update(self, features: np.ndarray, time_ns: int) -> Decision:
        """Feed one window's flat feature vector (len(names),) taken at ``time_ns``."""
        features = np.asarray(features, dtype=np.float64).ravel()
        if features.shape != (len(self.names),) or not np.isfinite(features).all():
            raise ValueError(f"{self.sensor_id}: expected {len(self.names)} finite features, got "
                             f"shape {features.shape}")
        if self.scorer is None:
            return self._learn(features, time_ns)
        return self._monitor(features, time_ns)

    def _learn(self, features: np.ndarray, time_ns: int) -> Decision:
        self.baseline.append(features)
        collected = len(self.baseline)
        self.baseline_times = (time_ns if collected == 1 else self.baseline_times[0], time_ns)
        if collected < self.settings.baseline_windows:
            transition: Transition | None = "baseline_learning" if collected == 1 else None
            return Decision(time_ns, "learning", transition, collected=collected)
        self._fit(np.array(self.baseline))
        self.baseline = []
        return Decision(time_ns, "monitoring", "baseline_ready", threshold=self.threshold,
                        smoothed=self.alarm_state.smoothed, collected=collected)

    def _fit(self, raw: np.ndarray) -> None:
        """Normalise the baseline, calibrate the threshold on out-of-fold scores, fit the final scorer."""
        self.normaliser.fit(raw)
        normal = self.normaliser(raw)
        scores = self._out_of_fold_scores(normal)
        smoothed = ewma(scores, self.settings.ewma_alpha)
        self.median = float(np.median(smoothed))
        spread = float(np.quantile(smoothed, self.settings.threshold_quantile)) - self.median
        self.threshold = self.median + self.settings.threshold_margin * max(spread, 1e-6 * (1 + abs(self.median)))
        self.baseline_scores = scores
        scorer = self.scorer_factory()
        scorer.fit(normal)
        self.scorer = scorer
        length = scorer.sequence_length
        self.history = deque((row for row in normal[len(normal) - length + 1:]), maxlen=length) if length > 1 \
            else deque(maxlen=1)
        self.alarm_state = _Alarm(smoothed=self.median, exceed=deque(maxlen=self.settings.n))

    def _out_of_fold_scores(self, normal: np.ndarray) -> np.ndarray:
        """Each baseline window scored by a scorer fitted without its (contiguous) fold."""
        length = self.scorer_factory().sequence_length
        positions = np.arange(length - 1, len(normal))
        scores: list[float] = []
        for fold in np.array_split(positions, self.settings.folds):
            keep = np.ones(len(normal), dtype=bool)
            keep[fold] = False
            scorer = self.scorer_factory()
            scorer.fit(normal[keep])
            scores.extend(scorer.score(normal[i - length + 1:i + 1]) for i in fold)
        return np.asarray(scores, dtype=np.float64)

    def _monitor(self, features: np.ndarray, time_ns: int) -> Decision:
        assert self.scorer is not None
        z = self.normaliser(features)
        self.history.append(z)
        score = float(self.scorer.score(np.array(self.history)))
        if not math.isfinite(score):
            raise ValueError(f"{self.sensor_id}: scorer {self.scorer.name} returned {score}")
        state, s = self.alarm_state, self.settings
        capped = min(score, self.median + s.score_cap * (self.threshold - self.median))
        state.smoothed = s.ewma_alpha * capped + (1 - s.ewma_alpha) * state.smoothed
        state.exceed.append(state.smoothed > self.threshold)
        transition: Transition | None = None
        if not state.alarm:
            if sum(state.exceed) >= s.k:
                state.alarm, state.below, state.last_report_ns, state.since_report = True, 0, time_ns, 0
                transition = "raised"
        else:
            clear_level = self.median + s.clear_ratio * (self.threshold - self.median)
            state.below = state.below + 1 if state.smoothed < clear_level else 0
            state.since_report += 1
            if state.below >= s.clear_windows:
                state.alarm, state.below = False, 0
                state.exceed.clear()
                transition = "cleared"
            elif (time_ns - state.last_report_ns >= s.update_interval_s * 1e9
                  and state.since_report >= s.update_windows):
                state.last_report_ns, state.since_report = time_ns, 0
                transition = "updated"
        excess = (state.smoothed - self.median) / (self.threshold - self.median)
        return Decision(time_ns, "monitoring", transition, score, state.smoothed, self.threshold,
                        state.alarm, z, excess=excess)

    def top_features(self, z: np.ndarray) -> list[dict[str, Any]]:
        """The features deviating most from the baseline, with their z-scores."""
        order = np.argsort(-np.abs(z))[: self.settings.top_features]
        return [{"feature": self.names[i], "z": round(float(z[i]), 2)} for i in order]

    def likely_fault(self, z: np.ndarray) -> tuple[str | None, dict[str, float]]:
        """The fault type the envelope spectrum points to (None if none stands out), and the evidence."""
        evidence: dict[str, float] = {}
        for i, name in enumerate(self.names):
            base = name.rpartition(".")[2]
            if base in FAULT_EVIDENCE:
                evidence[base] = max(evidence.get(base, -math.inf), round(float(z[i]), 2))
        if not evidence:
            return None, evidence
        best = max(evidence, key=lambda key: evidence[key])
        return (FAULT_TYPES[best.removeprefix("env_")] if evidence[best] >= self.settings.fault_z else None,
                evidence)

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, JSON-able."""
        alarm = self.alarm_state
        return {
            "version": STATE_VERSION,
            "sensor_id": self.sensor_id,
            "fingerprint": self.fingerprint,
            "names": self.names,
            "baseline": [row.tolist() for row in self.baseline],
            "baseline_times": list(self.baseline_times),
            "learnt": None if self.scorer is None else {
                "scorer": self.scorer.name,
                "scorer_state": self.scorer.state(),
                "normaliser": self.normaliser.state(),
                "threshold": self.threshold,
                "median": self.median,
                "history": [row.tolist() for row in self.history],
                "smoothed": alarm.smoothed, "alarm": alarm.alarm, "exceed": list(alarm.exceed),
                "below": alarm.below, "last_report_ns": alarm.last_report_ns, "since_report": alarm.since_report,
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`; StateError (and a fresh start) if it was learnt under other settings."""
        self.reset()
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self.fingerprint \
                or state.get("names") != self.names:
            raise StateError(f"{self.sensor_id}: saved state was learnt under other settings")
        try:
            self.baseline = [np.asarray(row, dtype=np.float64) for row in state["baseline"]]
            first, last = state.get("baseline_times", (0, 0))  # absent from older files
            self.baseline_times = (int(first), int(last))
            learnt = state["learnt"]
            if learnt is not None:
                self._load_learnt(learnt)
        except (KeyError, TypeError, ValueError) as error:
            self.reset()
            raise StateError(f"{self.sensor_id}: unusable saved state: {error}") from error

    def _load_learnt(self, learnt: dict[str, Any]) -> None:
        scorer = self.scorer_factory()
        if learnt["scorer"] != scorer.name:
            raise ValueError(f"state is for scorer {learnt['scorer']!r}, not {scorer.name!r}")
        scorer.load_state(learnt["scorer_state"])
        self.normaliser.load_state(learnt["normaliser"])
        self.threshold = float(learnt["threshold"])
        self.median = float(learnt["median"])
        self.history = deque((np.asarray(row, dtype=np.float64) for row in learnt["history"]),
                             maxlen=max(1, scorer.sequence_length))
        self.alarm_state = _Alarm(float(learnt["smoothed"]), bool(learnt["alarm"]),
                                  deque((bool(v) for v in learnt["exceed"]), maxlen=self.settings.n),
                                  int(learnt["below"]), int(learnt["last_report_ns"]),
                                  int(learnt.get("since_report", 0)))  # absent from older files
        self.scorer = scorer


class StateStore:
    """One JSON file per sensor under a folder, written atomically (temp file + os.replace)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, sensor_id: str) -> Path:
        return self.directory / f"{sensor_id}.json"

    def load(self, sensor_id: str) -> dict[str, Any] | None:
        """The saved state, or None if there is none or it cannot be read (the caller relearns)."""
        try:
            loaded = json.loads(self.path(sensor_id).read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def save(self, sensor_id: str, state: dict[str, Any]) -> Path:
        return write_json_atomic(self.path(sensor_id), state)

    def sensors(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.json")) if self.directory.is_dir() else []

    def reset(self, sensor_pattern: str) -> list[str]:
        """Delete the saved state of every sensor matching the fnmatch pattern; returns their ids."""
        removed = [sensor for sensor in self.sensors() if fnmatch.fnmatchcase(sensor, sensor_pattern)]
        for sensor in removed:
            self.path(sensor).unlink(missing_ok=True)
        return removed


def reset_baseline(state_dir: Path, sensor_pattern: str) -> list[str]:
    """Forget the learnt normal state of the matching sensors (``edge-agent reset-baseline SENSOR``).

    ``state_dir`` is the vibration task's state dir (its ``TaskContext.state_dir``, i.e. the agent's
    ``state_dir / "vibration"``).  A running agent notices the missing file within seconds and starts
    learning again (it never writes a reset machine's old state back); a stopped one does at its next
    start.  Returns the sensor ids whose state was removed.
    """
    return StateStore(Path(state_dir)).reset(sensor_pattern)

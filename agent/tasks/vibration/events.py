"""The vibration task's event bodies (docs/events.md and the JSON Schema are generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.events import EventBody


class BaselineLearning(EventBody):
    """A machine starts learning its normal state (new machine, changed stream, or reset after maintenance)."""

    type = "baseline_learning"
    severity = "info"
    windows_needed: int = Field(description="windows of data that define the normal state")
    window_s: float = Field(description="window length, seconds")
    mode: Literal["continuous", "snapshot"] = Field(
        description="continuous: a window every hop_s; snapshot: one window per burst (docs/wire-format.md)")
    scorer: str = Field(description="the anomaly scorer")
    reason: str = Field(description="why it learns: new machine, baseline reset, stream changed, ...")


class BaselineReady(EventBody):
    """The normal state is learnt; monitoring starts. The event's score is the alarm threshold."""

    type = "baseline_ready"
    severity = "info"
    windows: int = Field(description="windows the normal state was learnt from")
    span_s: float = Field(description="source time from the first to the last of those windows, seconds: about "
                                      "windows x hop_s for a continuous stream, windows x the burst interval "
                                      "for a snapshot sensor")
    threshold: float = Field(description="alarm threshold on the smoothed score")
    scorer: str = Field(description="the anomaly scorer")
    features: int = Field(description="monitored features")
    shaft_hz: float = Field(description="shaft speed, Hz (configured or estimated)")


class FeatureDeviation(BaseModel):
    """One feature and how far it is from this machine's normal state."""

    model_config = ConfigDict(extra="forbid")
    feature: str = Field(description="flat feature name, e.g. ch0.env_bpfo")
    z: float = Field(description="z-score against the machine's baseline")


class EnvelopeLine(BaseModel):
    """The strongest line of the window's envelope spectrum off the shaft harmonics."""

    model_config = ConfigDict(extra="forbid")
    hz: float = Field(description="its frequency, Hz")
    order: float = Field(description="its frequency in multiples of the shaft speed (a bearing's fault "
                                     "frequencies are such orders: match them against the bearing's data sheet)")
    prominence: float = Field(description="its amplitude over the median envelope-spectrum level")


class AnomalyRaised(EventBody):
    """The smoothed score exceeded the threshold in k of the last n windows. The event's score is the
    smoothed anomaly score."""

    type = "anomaly_raised"
    severity = "alarm"
    level: Literal["low", "medium", "high"] = Field(description="how far past the threshold")
    score: float = Field(description="smoothed anomaly score")
    threshold: float = Field(description="alarm threshold")
    health: float = Field(description="0-100 health index (50 at the threshold)")
    top_features: list[FeatureDeviation] = Field(description="the features that deviate most from normal")
    likely_fault: Literal["outer_race", "inner_race", "rolling_element", "cage", "unknown"] | None = Field(
        description="the bearing fault the evidence points to: the window's envelope harmonic family "
                    "(envelope_families) when one stands out, else the envelope features' deviation from this "
                    "machine's normal (fault_evidence_z); unknown when neither does, or when the machine's bearing "
                    "geometry is not configured (no race is named from a guess)")
    fault_evidence_z: dict[str, float] = Field(description="z-score of each envelope fault-frequency feature "
                                                           "(empty without the bearing geometry)")
    shaft_hz: float = Field(description="shaft speed, Hz")
    fault_frequencies_hz: dict[str, float] = Field(description="the bearing's fault frequencies at that speed "
                                                               "(empty without the bearing geometry)")
    envelope_families: dict[str, float] = Field(
        default={}, description="with the bearing geometry: for bpfo, bpfi and bsf (at 2 x BSF, a spall's impact "
                                "rate), the mean prominence of the first three harmonics in this window's "
                                "envelope spectrum; a family of 4 or more, 1.3 times the next, names the fault")
    envelope_peak: EnvelopeLine | None = Field(
        default=None, description="without the bearing geometry: the evidence there is, the envelope spectrum's "
                                  "dominant line (null with the geometry, or when no line stands out)")


class AnomalyUpdated(AnomalyRaised):
    """As ``anomaly_raised``, while the anomaly lasts; at most one per ``update_interval_s`` of source time and
    per ``update_windows`` windows (defaults 60 s and 12: on 20-min snapshots one every 4 h), and one at once
    when the evidence first names the fault of an alarm raised as ``unknown``."""

    type = "anomaly_updated"
    severity = "warning"


class AnomalyCleared(EventBody):
    """The smoothed score stayed below the clearing level (hysteresis) for ``clear_windows`` windows."""

    type = "anomaly_cleared"
    severity = "info"
    score: float = Field(description="smoothed anomaly score")
    threshold: float = Field(description="alarm threshold")
    duration_s: float | None = Field(description="how long the anomaly lasted, seconds (null if unknown)")


class Health(EventBody):
    """Periodic (``health_interval_s``) per machine, on ``{prefix}/{device}/health/vibration``. The event's
    score is the 0-100 health index (null while learning)."""

    type = "health"
    severity = "info"
    health: float | None = Field(description="0-100 health index; null while learning")
    state: Literal["learning", "normal", "anomaly"] = Field(description="the machine's state")
    windows: int = Field(description="windows since the last health event")
    rejected: int = Field(description="windows rejected since the last health event")
    spikes_removed: int = Field(description="spikes removed since the last health event")
    shaft_hz: float = Field(description="last shaft speed, Hz")
    score: float | None = Field(description="last smoothed anomaly score, on the scorer's scale like "
                                            "anomaly_raised's score, not the 0-100 health (null before the first "
                                            "window)")
    threshold: float | None = Field(description="alarm threshold on that score; null while learning")
    baseline_progress: float | None = Field(default=None, description="share of the baseline learnt, while learning")


EVENTS = (BaselineLearning, BaselineReady, AnomalyRaised, AnomalyUpdated, AnomalyCleared, Health)

"""Tests of the vibration task: the events it emits on simulated streams, rejections, restarts, config checks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import structlog
from pydantic import ValidationError

from agent.events import EventDraft, finalize, schema
from agent.tasks.base import RejectedInput, TaskContext
from agent.tasks.vibration.task import VibrationConfig, VibrationTask
from agent.windowing import Window, Windower
from models.runtime import load_model
from models.vibration.runtime.monitor import reset_baseline
from sensors.simulate.vibration import FaultKind, MachineSpec, RunSpec, VibrationSimulator, run_to_failure
from sensors.wire import Kind, SensorMessage

FS = 8000.0
WINDOW_S = 0.5
MACHINE = MachineSpec(shaft_hz=31.0, resonance_hz=2600.0, dropouts_per_hour=0.0, spikes_per_s=0.0,
                      channel_gains=(1.0, 0.6))
LSTM_MANIFEST = Path(__file__).resolve().parents[1] / "models" / "vibration" / "manifest.yaml"


def make_task(state_dir: Path, **config: object) -> VibrationTask:
    settings = {"baseline_windows": 40, "window_s": WINDOW_S, "hop_s": WINDOW_S, "update_interval_s": 5.0,
                "health_interval_s": 1e-3, "shaft_hz": None, "bearing": {}, **config}
    context = TaskContext("edge-1", state_dir, load_model, structlog.get_logger())
    return VibrationTask(VibrationConfig(**settings), context)


def windows(kind: FaultKind | None, duration_s: float = 45.0, onset_s: float = 25.0, sensor: str = "pump-1",
            start_ns: int = 10**18) -> list[Window]:
    """Windows of a simulated stream, cut by the agent's own Windower from wire messages."""
    run = (RunSpec(duration_s=duration_s, sample_rate=FS) if kind is None
           else run_to_failure(kind, onset_s, duration_s, sample_rate=FS))
    windower = Windower(WINDOW_S, WINDOW_S)
    out: list[Window] = []
    for message in VibrationSimulator(MACHINE, run, seed=3).messages(sensor, start_ns, chunk_s=0.25):
        cut, stream_break = windower.feed(message)
        assert stream_break is None
        out.extend(cut)
    return out


def check_scores(event_type: str, score: float | None, body: dict) -> None:
    """What docs/events.md says of a vibration event's two scales: anomaly events carry the anomaly score (and
    the 0-100 health index in the body), health events the 0-100 health index (and the anomaly score in the body)."""
    if event_type in ("anomaly_raised", "anomaly_updated"):
        assert score == body["score"] and 0 <= body["health"] <= 100 and body["health"] != body["score"]
    elif event_type == "health":
        assert score == body["health"] and (score is None or 0 <= score <= 100)
        assert body["threshold"] is None or body["score"] is not None


def run(task: VibrationTask, items: list[Window]) -> list[EventDraft]:
    return [draft for item in items for draft in task.process(item)]


def types(drafts: list[EventDraft]) -> list[str]:
    return [draft.type for draft in drafts]


class TestEvents:
    def test_faulty_machine_learns_then_raises_with_the_fault_type(self, tmp_path: Path) -> None:
        """Learning, ready, then an alarm after onset naming the outer race and the deviating features."""
        task = make_task(tmp_path)
        stream = windows("outer_race")
        drafts = run(task, stream)
        assert types(drafts)[:2] == ["baseline_learning", "baseline_ready"]
        raised = [d for d in drafts if d.type == "anomaly_raised"]
        assert len(raised) == 1 and raised[0].severity == "alarm"
        onset_ns = stream[0].start_ns + 25 * 10**9
        assert raised[0].source_time_ns >= onset_ns
        body = raised[0].body
        assert body["likely_fault"] == "outer_race" and body["level"] in ("low", "medium", "high")
        families = body["envelope_families"]  # the window's own evidence, which named the race
        assert set(families) == {"bpfo", "bpfi", "bsf"} and families["bpfo"] >= 1.3 * max(families["bpfi"],
                                                                                           families["bsf"])
        assert body["top_features"][0]["feature"].startswith("ch") and abs(body["top_features"][0]["z"]) > 3
        assert body["fault_frequencies_hz"]["bpfo"] == pytest.approx(MACHINE.geometry.orders()["bpfo"]
                                                                     * body["shaft_hz"], rel=1e-3)

    def test_without_the_bearing_geometry_no_race_is_named(self, tmp_path: Path) -> None:
        """No bearing configured: the same fault is raised, but as likely_fault unknown, with no fault frequencies
        or evidence from a default bearing; a machine pattern's bearing makes it named again."""
        stream = windows("outer_race")
        [raised] = [d for d in run(make_task(tmp_path / "a", bearing=None), stream) if d.type == "anomaly_raised"]
        assert raised.body["likely_fault"] == "unknown"
        assert raised.body["fault_frequencies_hz"] == {} and raised.body["fault_evidence_z"] == {}
        # the evidence there is: the envelope spectrum's dominant line, at the (unconfigured) bearing's BPFO
        assert raised.body["envelope_peak"]["order"] == pytest.approx(MACHINE.geometry.orders()["bpfo"], rel=0.03)
        jsonschema.validate(finalize(raised, "edge-1", "vibration"), schema())
        per_machine = make_task(tmp_path / "b", bearing=None, machines={"pump-*": {"bearing": {}}})
        [named] = [d for d in run(per_machine, stream) if d.type == "anomaly_raised"]
        assert named.body["likely_fault"] == "outer_race" and named.body["envelope_peak"] is None

    @pytest.mark.parametrize("kind", ["inner_race", "rolling_element"])
    def test_a_fault_named_after_the_raise_is_sent_at_once(self, tmp_path: Path, kind: FaultKind) -> None:
        """A weak inner-race or ball fault raises the alarm before its race stands out (``unknown``); the first
        window whose evidence names it sends an ``anomaly_updated`` with the type at once, whatever the update
        rate limit (here: none would come), and only once.  The fault grows over 35 s: over 20 s the alarm
        comes late enough for the race to stand out already, with the shaft speed estimated right."""
        drafts = run(make_task(tmp_path, update_interval_s=86_400, update_windows=10_000),
                     windows(kind, duration_s=60.0))
        anomalies = [d for d in drafts if d.type.startswith("anomaly_")]
        assert [d.type for d in anomalies] == ["anomaly_raised", "anomaly_updated"]
        assert anomalies[0].body["likely_fault"] == "unknown" and anomalies[1].body["likely_fault"] == kind

    def test_healthy_machine_raises_nothing(self, tmp_path: Path) -> None:
        """A healthy stream gives the baseline events and no anomaly."""
        drafts = run(make_task(tmp_path), windows(None))
        assert types(drafts) == ["baseline_learning", "baseline_ready"]

    def test_updates_while_raised_are_rate_limited_warnings(self, tmp_path: Path) -> None:
        """After the alarm, anomaly_updated warnings come no faster than update_interval_s of source time (an
        outer-race fault, named at the raise: no update for a newly named fault comes in between)."""
        drafts = run(make_task(tmp_path), windows("outer_race", duration_s=60.0, onset_s=22.0))
        assert next(d for d in drafts if d.type == "anomaly_raised").body["likely_fault"] == "outer_race"
        updates = [d for d in drafts if d.type == "anomaly_updated"]
        assert updates and all(d.severity == "warning" for d in updates)
        gaps = np.diff([d.source_time_ns for d in updates]) / 1e9
        assert (gaps >= 5.0).all()

    def test_health_events_per_machine(self, tmp_path: Path) -> None:
        """tick emits one health event per machine with a 0-100 health score once learnt."""
        task = make_task(tmp_path)
        run(task, windows(None, duration_s=25.0) + windows(None, duration_s=5.0, sensor="fan-2"))
        time.sleep(0.01)  # the wall clock moves on before tick(now), as it does between windows
        health = {d.sensor: d for d in task.tick(time.time_ns())}
        assert set(health) == {"pump-1", "fan-2"}
        assert health["pump-1"].body["state"] == "normal" and 0 <= health["pump-1"].body["health"] <= 100
        assert health["fan-2"].body["state"] == "learning" and 0 < health["fan-2"].body["baseline_progress"] < 1

    def test_every_event_is_schema_valid(self, tmp_path: Path) -> None:
        """Every draft, finalised by the agent's code, validates against the event JSON Schema."""
        task = make_task(tmp_path)
        drafts = run(task, windows("rolling_element", duration_s=50.0))
        time.sleep(0.01)  # the wall clock moves on before tick(now), as it does between windows
        drafts += task.tick(time.time_ns())
        assert {"baseline_learning", "baseline_ready", "anomaly_raised", "health"} <= set(types(drafts))
        for draft in drafts:
            jsonschema.validate(finalize(draft, "edge-1", "vibration"), schema())
            check_scores(draft.type, draft.score, draft.body)

    def test_the_documented_examples_use_the_scores_as_the_code_does(self) -> None:
        """The vibration examples in docs/events.md put the health index and the anomaly score where the task does
        (the checks of test_every_event_is_schema_valid's drafts)."""
        text = (Path(__file__).parents[1] / "docs" / "events.md").read_text()
        examples = [json.loads(block.split("```", 1)[0]) for block in text.split("```json\n")[1:]]
        vibration = [event for event in examples if event.get("task") == "vibration"]
        assert {event["type"] for event in vibration} >= {"anomaly_raised", "health"}
        for event in vibration:
            check_scores(event["type"], event["score"], event["body"])


class TestRejections:
    def test_dropout_window_is_rejected(self, tmp_path: Path) -> None:
        """A flat-lined window (sensor dropout) raises RejectedInput saying so."""
        window = windows(None, duration_s=1.0)[0]
        flat = Window(window.sensor_id, window.kind, np.zeros_like(window.samples), FS, window.start_ns, 0)
        with pytest.raises(RejectedInput, match="flat"):
            make_task(tmp_path).process(flat)

    def test_frames_are_rejected(self, tmp_path: Path) -> None:
        """A camera frame is not a vibration window."""
        frame = SensorMessage("cam", Kind.FRAME, 0, 1, np.zeros((4, 4), np.uint8))
        with pytest.raises(RejectedInput, match="windows"):
            make_task(tmp_path).process(frame)

    def test_too_short_window_is_rejected(self, tmp_path: Path) -> None:
        """A window too short to resolve the shaft speed is rejected, not a crash."""
        short = Window("pump-1", Kind.VIBRATION, np.random.default_rng(0).normal(size=(64, 1)).astype(np.float32),
                       FS, 1, 0)
        with pytest.raises(RejectedInput, match="shaft"):
            make_task(tmp_path).process(short)


class TestPersistence:
    def test_restart_resumes_without_relearning(self, tmp_path: Path) -> None:
        """After close and a new task on the same state dir, the machine is monitored at once."""
        stream = windows("outer_race", duration_s=50.0)
        first = make_task(tmp_path)
        run(first, stream[:50])
        first.close()
        assert (tmp_path / "pump-1.json").is_file()
        second = make_task(tmp_path)
        drafts = run(second, stream[50:])
        assert "baseline_learning" not in types(drafts) and "anomaly_raised" in types(drafts)

    def test_reset_baseline_on_a_running_task_relearns(self, tmp_path: Path) -> None:
        """reset_baseline while running: the next tick notices, the next window starts learning again."""
        stream = windows(None, duration_s=30.0)
        task = make_task(tmp_path)
        run(task, stream[:45])
        assert reset_baseline(tmp_path, "pump-*") == ["pump-1"]
        task.tick(time.time_ns())
        drafts = run(task, stream[45:])
        assert drafts[0].type == "baseline_learning" and drafts[0].body["reason"] == "baseline reset"
        task.close()
        assert task.machines["pump-1"].monitor.learning

    def test_changed_scorer_relearns(self, tmp_path: Path) -> None:
        """State learnt with one scorer is not used by another: the machine learns again."""
        stream = windows(None, duration_s=25.0)
        first = make_task(tmp_path, scorer="pca")
        run(first, stream)
        first.close()
        drafts = run(make_task(tmp_path, scorer="gmm"), stream[:2])
        assert types(drafts) == ["baseline_learning"]
        assert "other settings" in drafts[0].body["reason"]


    @pytest.mark.parametrize(("shaft_hz", "relearns"), [(None, True), (31.0, False)])
    def test_state_learnt_with_the_old_shaft_estimator(self, tmp_path: Path, shaft_hz: float | None,
                                                       relearns: bool) -> None:
        """A baseline saved before the shaft speed estimator changed (no ``shaft_estimator`` in its
        fingerprint) is relearnt when the speed is estimated, kept when it is configured."""
        stream = windows(None, duration_s=25.0)
        first = make_task(tmp_path, shaft_hz=shaft_hz)
        run(first, stream)
        first.close()
        path = tmp_path / "pump-1.json"
        saved = json.loads(path.read_text())
        assert ("shaft_estimator" in saved["fingerprint"]) == relearns
        saved["fingerprint"].pop("shaft_estimator", None)
        path.write_text(json.dumps(saved))
        drafts = run(make_task(tmp_path, shaft_hz=shaft_hz), stream[:2])
        assert ("baseline_learning" in types(drafts)) == relearns

class TestConfig:
    def test_lstm_without_model_is_a_clear_error(self) -> None:
        """Choosing the LSTM scorer without a model manifest fails validation, naming the fix."""
        with pytest.raises(ValidationError, match="needs a model"):
            VibrationConfig(scorer="lstm_ae")

    @pytest.mark.parametrize(("field", "value", "message"), [
        ("scorer", "magic", "unknown scorer"), ("features", ["rms", "vibes"], "unknown features"),
        ("k", 9, "must not exceed"),
    ])
    def test_bad_settings_are_refused(self, field: str, value: object, message: str) -> None:
        """Unknown scorers or features, and k > n, are refused at validation."""
        with pytest.raises(ValidationError, match=message):
            VibrationConfig(**{field: value})

    @pytest.mark.parametrize(("settings", "warned"), [
        ({}, True),
        ({"bearing": {}}, False),
        ({"sensors": ["pump-*", "fan-*"], "machines": {"pump-*": {"bearing": {}}}}, True),
        ({"sensors": ["pump-*", "fan-*"], "machines": {"pump-*": {"bearing": {}}, "fan-*": {"bearing": {}}}}, False),
    ])
    def test_validate_config_warns_without_a_bearing_geometry(self, settings: dict, warned: bool) -> None:
        """Fault typing needs the bearing geometry: a sensors pattern no bearing covers draws a warning."""
        warnings = VibrationConfig(**settings).warnings()
        assert any("fault typing needs it" in warning for warning in warnings) == warned

    def test_per_machine_bearing_and_speed(self, tmp_path: Path) -> None:
        """A machine pattern's bearing and shaft speed are used for matching sensors only."""
        task = make_task(tmp_path, machines={"pump-*": {"shaft_hz": 31.0,
                                                        "bearing": {"n_elements": 9, "element_diameter": 7.94,
                                                                    "pitch_diameter": 39.04,
                                                                    "contact_angle_deg": 0}}})
        assert task._feature_settings("pump-1").shaft_hz == 31.0
        assert task._feature_settings("pump-1").geometry.n_elements == 9
        assert task._feature_settings("fan-1").shaft_hz is None

    @pytest.mark.skipif(not LSTM_MANIFEST.is_file(), reason="the LSTM model is committed by its own issue")
    def test_lstm_scorer_runs_with_the_committed_model(self, tmp_path: Path) -> None:
        """With the committed ONNX model the LSTM scorer learns a baseline and reports the model's version."""
        task = make_task(tmp_path, scorer="lstm_ae", model=LSTM_MANIFEST)
        manifest = task.model.manifest if task.model else None
        assert manifest is not None and task.models()[0].version == manifest.version
        drafts = run(task, windows(None, duration_s=25.0))
        assert "baseline_ready" in types(drafts)

"""Tests of station normals: the feature bank, and the quality task learning, resuming, relearning and feedback."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import EventDraft, finalize, schema
from agent.tasks.base import TaskContext
from agent.tasks.quality.commands import QUALITY
from agent.tasks.quality.task import QualityConfig, QualityTask
from models.quality.runtime.station import (
    StationLearner,
    StationNormal,
    StationSettings,
    greedy_coreset,
)
from models.runtime import load_model
from sensors.simulate.parts import PartGenerator
from sensors.wire import Kind, SensorMessage

SEED = 2024
LEARN = 20  # our renderer varies optics per part: 10 frames were too few for its descriptors


def normal_cells(rng: np.random.Generator, count: int = 500) -> np.ndarray:
    """A station's usual cells: two clusters in a 16-d feature space."""
    centres = np.array([np.zeros(16), np.full(16, 3.0)])
    return (centres[rng.integers(2, size=count)] + rng.normal(scale=0.3, size=(count, 16))).astype(np.float32)


def small_station(rng: np.random.Generator) -> StationNormal:
    """A station normal learned from 10 frames of usual cells into a bank of 64."""
    learner = StationLearner(StationSettings(frames=10, components=8, bank_size=64, frame_keep=32))
    for _ in range(10):
        learner.add(normal_cells(rng))
    return learner.build()


class TestFeatureBank:
    def test_usual_cells_score_about_one_and_unusual_ones_far_above(self) -> None:
        """Novelty is scaled on held-out good frames: usual cells stay near or below 1, a new structure is far."""
        rng = np.random.default_rng(1)
        learner = StationLearner(StationSettings(frames=20, components=8, bank_size=128, frame_keep=64))
        for _ in range(20):
            learner.add(normal_cells(rng))
        assert learner.ready
        station = learner.build()
        assert np.quantile(station.novelty(normal_cells(rng)), 0.99) < 1.2
        assert station.novelty(np.full((1, 16), 8.0, dtype=np.float32))[0] > 3

    def test_saved_station_gives_the_same_novelty(self) -> None:
        rng = np.random.default_rng(2)
        station = small_station(rng)
        probe = normal_cells(rng, 50)
        loaded = StationNormal.from_bytes(station.to_bytes())
        np.testing.assert_allclose(loaded.novelty(probe), station.novelty(probe), rtol=2e-3, atol=2e-3)
        assert loaded.frames == 10 and loaded.learned == len(loaded.bank)

    def test_feedback_makes_a_structure_usual_and_stays_bounded(self) -> None:
        """Points an operator calls good join the bank; past the limit the oldest feedback goes, learning stays."""
        rng = np.random.default_rng(3)
        station = small_station(rng)
        odd = np.full((4, 16), 8.0, dtype=np.float32)
        assert station.novelty(odd).min() > 3
        station.extend(station.project(odd), limit=70)
        assert station.novelty(odd).max() < 0.01
        station.extend(station.project(normal_cells(rng, 20)), limit=70)
        assert len(station.bank) == 70 and station.learned == 64

    @settings(max_examples=25, deadline=None)
    @given(st.integers(1, 40), st.integers(0, 2**31 - 1))
    def test_coreset_picks_distinct_points_that_cover_the_rest(self, size: int, seed: int) -> None:
        """Greedy k-centre: distinct picks, and no point is further from them than the last pick was."""
        rng = np.random.default_rng(seed)
        points = rng.normal(size=(60, 3)).astype(np.float32)
        picks = greedy_coreset(points, size, rng)
        assert len(set(picks.tolist())) == min(size, 60)
        nearest = np.min(np.linalg.norm(points[:, None] - points[picks][None], axis=2), axis=1)
        if size < 60:
            last = np.min(np.linalg.norm(points[picks[-1]] - points[picks[:-1]], axis=1)) if size > 1 else np.inf
            assert nearest.max() <= last + 1e-5


def frame(image: np.ndarray, part_id: str, seq: int = 0) -> SensorMessage:
    return SensorMessage("camera-01", Kind.FRAME, seq, 1_700_000_000_000_000_000 + seq, image, 0.0,
                         meta={"part_id": part_id})


def make_task(state: Path) -> QualityTask:
    context = TaskContext("test-device", state / "quality", load_model, structlog.get_logger("test"))
    return QualityTask(QualityConfig(station_normal=True, learn_frames=LEARN), context)


def by_type(drafts: list[EventDraft], kind: str) -> list[EventDraft]:
    return [draft for draft in drafts if draft.type == kind]


def command(state: Path, *words: str) -> int:
    actions = {"relearn": ("camera",), "false-reject": ("camera", "part_id"), "stations": ()}
    names = actions[words[0]]
    args = argparse.Namespace(quality_action=words[0], **dict(zip(names, words[1:], strict=True)))
    return QUALITY.run(args, SimpleNamespace(state_dir=state))


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[EventDraft]]:
    """A state dir whose camera-01 learned its station from LEARN good parts, and the events that made."""
    state = tmp_path_factory.mktemp("state")
    task = make_task(state)
    generator = PartGenerator(SEED)
    drafts = [draft for index in range(LEARN)
              for draft in task.process(frame(generator.part("val", index, defective=False).image, f"G{index}", index))]
    task.close()
    return state, drafts


class TestStationTask:
    def test_learning_then_ready_and_saved(self, learned: tuple[Path, list[EventDraft]],
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """The first frame starts learning, the LEARN-th completes it; inspection goes on meanwhile."""
        state, drafts = learned
        (learning,) = by_type(drafts, "baseline_learning")
        (ready,) = by_type(drafts, "baseline_ready")
        assert learning.body == {"frames_needed": LEARN, "reason": "new camera"}
        assert ready.body["frames"] == LEARN and ready.body["bank_size"] > 0
        inspected = by_type(drafts, "part_inspected")
        assert len(inspected) == LEARN and {d.body["station"] for d in inspected} == {"learning"}
        assert (state / "quality" / "stations" / "camera-01.npz").is_file()
        for draft in drafts:
            jsonschema.validate(finalize(draft, "test-device", "quality"), schema())
        assert command(state, "stations") == 0 and capsys.readouterr().out.split() == ["camera-01"]

    def test_resumed_station_tempers_the_classifier_and_still_rejects_a_defect(
            self, learned: tuple[Path, list[EventDraft]]) -> None:
        state, _ = learned
        task = make_task(state)
        generator = PartGenerator(SEED)
        good = task.process(frame(generator.part("test", 0, defective=False).image, "G-test"))
        defective = next(p for p in (generator.part("test", i, defective=True) for i in range(100))
                         if p.defects[0].kind in ("spot", "bubble") and p.defects[0].size_px >= 10)
        bad = task.process(frame(defective.image, "B-test"))
        task.close()
        assert not by_type(good + bad, "baseline_learning")  # resumed, not relearned
        (accepted,), (rejected,) = good, bad
        assert accepted.body["station"] == "ready" and accepted.body["decision"] == "accept"
        assert accepted.body["novelty"] is not None
        # the part's largest novelty need not be the defect's (a cut end may be as unusual): the combined score is
        assert rejected.score is not None and accepted.score is not None
        assert rejected.body["decision"] == "reject" and rejected.score > accepted.score
        x, y = rejected.body["location"]["peak"]
        rows, cols = np.nonzero(defective.mask)
        assert cols.min() - 8 <= x <= cols.max() + 8 and rows.min() - 8 <= y <= rows.max() + 8

    def test_a_false_reject_marked_by_an_operator_is_accepted_next_time(self, tmp_path: Path,
                                                                         learned: tuple[Path, list]) -> None:
        """false-reject queues the part; the running task takes it in on its tick and accepts it after."""
        import shutil

        state = tmp_path / "state"
        shutil.copytree(learned[0], state)
        task = make_task(state)
        generator = PartGenerator(SEED)
        parts = (generator.part("test", i, defective=True) for i in range(100))
        spots = (p for p in parts if p.defects[0].kind == "spot")
        # the first spot the task rejects (broad frames: some spots are faint or blurred and accepted)
        part, first = next((p, event) for p in spots for event in task.process(frame(p.image, "P-7"))
                           if event.body["decision"] == "reject")
        assert command(state, "false-reject", "camera-01", "P-nothing") == 1
        assert command(state, "false-reject", "camera-01", "P-7") == 0
        (taken,) = task.tick(0)
        assert taken.type == "false_reject_learned" and taken.body["cells"] > 0 and taken.body["reason"] == ""
        (again,) = task.process(frame(part.image, "P-7"))
        task.close()
        assert again.score is not None and first.score is not None
        assert again.body["decision"] == "accept" and again.score < first.score

    def test_relearn_makes_the_running_task_learn_again(self, tmp_path: Path, learned: tuple[Path, list]) -> None:
        import shutil

        state = tmp_path / "state"
        shutil.copytree(learned[0], state)
        task = make_task(state)
        image = PartGenerator(SEED).part("test", 1, defective=False).image
        (event,) = task.process(frame(image, "G1"))
        assert event.body["station"] == "ready"
        assert command(state, "relearn", "camera-9*") == 1
        assert command(state, "relearn", "camera-*") == 0
        (learning,) = task.tick(0)
        assert learning.type == "baseline_learning" and learning.body["reason"] == "relearn requested"
        (event,) = task.process(frame(image, "G2"))
        task.close()
        assert event.body["station"] == "learning" and event.body["novelty"] is None

    def test_a_forgotten_camera_resumes_its_saved_normal(self, learned: tuple[Path, list]) -> None:
        """The agent forgets the least recently seen sensors; a camera with a saved normal comes back ready."""
        task = make_task(learned[0])
        image = PartGenerator(SEED).part("test", 1, defective=False).image
        task.process(frame(image, "G1"))
        task.forget("camera-01")
        assert "camera-01" not in task.stations.by_camera
        drafts = task.process(frame(image, "G2"))
        task.close()
        assert [d.body["station"] for d in drafts] == ["ready"]

    def test_a_station_learned_for_another_frame_size_is_not_used(self, tmp_path: Path,
                                                                  learned: tuple[Path, list]) -> None:
        import shutil

        state = tmp_path / "state"
        shutil.copytree(learned[0], state)
        task = make_task(state)
        image = PartGenerator(SEED).part("test", 1, defective=False).image[:240, :320]
        drafts = task.process(frame(np.ascontiguousarray(image), "small"))
        task.close()
        (learning,) = by_type(drafts, "baseline_learning")
        assert "not usable" in learning.body["reason"] and "[240, 320]" in learning.body["reason"]


    def test_a_normal_saved_on_the_classifier_s_features_is_relearned(self, tmp_path: Path,
                                                                       learned: tuple[Path, list]) -> None:
        """A normal saved before the stations had their own descriptors (no ``features`` in its header) is not
        loaded into the new feature space: the camera learns again, and says why."""
        import json
        import shutil

        state = tmp_path / "state"
        shutil.copytree(learned[0], state)
        path = state / "quality" / "stations" / "camera-01.npz"
        data = path.read_bytes()
        size = int.from_bytes(data[:4], "big")
        meta = json.loads(data[4 : 4 + size])
        del meta["features"]
        old = json.dumps(meta).encode()
        path.write_bytes(len(old).to_bytes(4, "big") + old + data[4 + size :])
        task = make_task(state)
        drafts = task.process(frame(PartGenerator(SEED).part("test", 1, defective=False).image, "G1"))
        task.close()
        (learning,) = by_type(drafts, "baseline_learning")
        assert "not usable" in learning.body["reason"] and "classifier" in learning.body["reason"]
        assert by_type(drafts, "part_inspected")[0].body["station"] == "learning"


def test_the_station_evaluation_runs_end_to_end(tmp_path: Path) -> None:
    """evaluate_stations on a few parts per station writes the summary, the report and its chart."""
    import json

    from agent.tasks.quality.evaluate_stations import ALT_STATIONS, OWN_STATIONS, main

    assert main(["--learn", "10", "--good", "4", "--defective", "2", "--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "stations.json").read_text())
    for station in [*ALT_STATIONS, *OWN_STATIONS]:
        combined = summary[station]["combined (the task)"]
        assert combined["good"] == 4 and combined["defective"] == 2 and 0 <= combined["auc"] <= 1
    report = (tmp_path / "stations.md").read_text()
    assert "| alt-darkfield | combined (the task) |" in report and "Border:" in report
    assert (tmp_path / "stations.png").read_bytes()[:4] == b"\x89PNG"

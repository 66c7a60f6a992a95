"""The broker load test of docs/scaling.md, small: 5 agents' event streams for 2 s through a real Mosquitto
lose nothing and duplicate nothing, and the events it makes are real-shaped (valid against the schema)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema

from agent.events import dumps, finalize, schema
from tests.benchmarks.bench_broker_load import MIX, load_run


def test_load_test_events_are_schema_valid() -> None:
    rng = random.Random(0)
    for task, maker, _ in MIX:
        shapes: dict[tuple[str, bool], dict[str, object]] = {}  # one event per severity and attachment
        for seq in range(200):  # rejects (with their crop) come with 3 % of the parts
            draft, attachment = maker(rng, seq)
            shapes.setdefault((draft.severity, attachment is not None), finalize(draft, "line-000", task))
            if task != "quality":
                break
        assert task != "quality" or set(shapes) == {("info", False), ("alarm", True)}
        for event in shapes.values():
            jsonschema.validate(json.loads(dumps(event)), schema())


def test_five_agents_through_one_broker_lose_nothing(tmp_path: Path) -> None:
    result = load_run(agents=5, rate=10, seconds=2, drain_s=10, folder=tmp_path)
    assert result["sent"] >= 90
    assert result["received_unique"] == result["sent"]
    assert result["lost"] == 0
    assert result["held_in_outboxes"] == 0
    assert result["duplicates"] == 0

"""Tests of the plug-in house: a task added from one folder and one registry line, registries, generated docs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.cli import build_parser
from agent.config import ConfigError, parse_config
from agent.daemon import Agent
from agent.schema import build_schema, render_docs
from agent.schema.__main__ import main as schema_main
from agent.tasks import TASKS, task_commands
from agent.testing import wait_until
from sensors.plugins import Registry
from tests.plugin_task.task import LevelTask

PLUGIN_FOLDER = Path(__file__).parent / "plugin_task"


@pytest.fixture
def level_task() -> Iterator[None]:
    TASKS.register("level", LevelTask)  # the one registry line a new task needs
    yield
    TASKS.unregister("level")


def level_config(tmp_path: Path) -> dict[str, object]:
    return {"device": "plugin-test", "state_dir": str(tmp_path),
            "sources": [{"kind": "simulator", "seed": 3, "level": {"microphones": 1, "loud_every_s": 2}}],
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
            "tasks": {"level": {"threshold_dbfs": -20, "window_s": 1.0, "hop_s": 1.0}},
            "log": {"level": "warning", "format": "json"}}


def wait_for_events(path: Path, event_type: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The events written so far, once one of ``event_type`` is among them."""
    def events() -> list[dict[str, Any]]:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [json.loads(line) for line in lines if line.endswith("}")]  # not a half-written line
        return found if any(event["type"] == event_type for event in found) else []

    return wait_until(events, timeout_s, 0.1, f"no {event_type} event in {path} within {timeout_s} s")


class TestAddingATask:
    def test_the_folder_is_self_contained(self) -> None:
        """The example task's folder holds its task, config, events, simulation and commands, and nothing imports
        it but the test that registers it."""
        assert {path.name for path in PLUGIN_FOLDER.glob("*.py")} >= {"task.py", "events.py", "simulate.py",
                                                                      "commands.py"}
        root = Path(__file__).parents[1]
        sources = [path for folder in ("agent", "models", "sensors", "tests") for path in (root / folder).rglob("*.py")]
        importers = [path for path in sources if PLUGIN_FOLDER not in path.parents and path != Path(__file__)
                     and "tests.plugin_task" in path.read_text()]
        assert importers == []

    def test_config_demo_stream_event_and_schema(self, level_task: None, tmp_path: Path) -> None:
        """Registered, the task is configurable, its simulated microphone feeds it in the demo source, its events
        come out and validate against the schema generated with it, and its docs section is generated."""
        config = parse_config(level_config(tmp_path))
        agent = Agent(config)
        agent.start()
        try:
            events = wait_for_events(tmp_path / "events.jsonl", "loud_sound")
        finally:
            agent.stop()
        loud = [event for event in events if event["type"] == "loud_sound"]
        assert loud[0]["task"] == "level" and loud[0]["sensor"] == "mic-00"
        assert loud[0]["body"]["level_dbfs"] > -20
        schema = build_schema({**{name: TASKS.get(name) for name in TASKS.entries}, "level": LevelTask})
        for event in events:
            jsonschema.validate(event, schema)
        bad = {**loud[0], "body": {"level_dbfs": "loud"}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        assert "#### `loud_sound` (warning)" in render_docs({"level": LevelTask})

    def test_its_command_joins_the_cli(self, level_task: None, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """The task's maintenance command is an edge-agent command, run on the validated config."""
        assert "level-threshold" in [command.name for command in task_commands()]
        config_path = tmp_path / "agent.yaml"
        config_path.write_text(json.dumps(level_config(tmp_path)))
        args = build_parser().parse_args(["level-threshold", "--config", str(config_path)])
        assert args.handler(args) == 0
        assert "level threshold: -20.0 dBFS" in capsys.readouterr().out

    def test_unregistered_the_task_is_unknown_again(self, tmp_path: Path) -> None:
        """Without its registry line the same config is refused, naming the key."""
        with pytest.raises(ConfigError, match=r"tasks\.level"):
            parse_config(level_config(tmp_path))


class TestRegistries:
    def test_an_unknown_source_kind_names_the_known_ones(self, tmp_path: Path) -> None:
        """A typo in a source kind is a config error listing the kinds that exist."""
        data = level_config(tmp_path)
        data.update(sources=[{"kind": "mqqt"}], tasks={})
        with pytest.raises(ConfigError, match=r"mqtt.*zmq.*recording.*simulator"):
            parse_config(data)

    def test_an_unknown_kind_asked_of_a_registry_names_the_known_ones(self) -> None:
        """Registry.get of an unknown kind raises ConfigError with the known kinds."""
        registry: Registry[object] = Registry("widget", {"a": "json:dumps"})
        with pytest.raises(ConfigError, match="unknown widget kind 'b'; known: a"):
            registry.get("b")

    def test_a_plugin_whose_config_kind_disagrees_is_refused(self) -> None:
        """A plug-in registered under one kind whose config says another is a programming error, caught early."""
        from sensors.sources.zmq import ZmqSource

        registry: Registry[object] = Registry("source", {})
        registry.register("mqtt", ZmqSource)
        with pytest.raises(TypeError, match="Literal"):
            registry.config_union()


class TestGeneratedDocs:
    def test_committed_schema_and_event_docs_are_current(self) -> None:
        """agent/schema/event.schema.json and docs/events.md are what `python -m agent.schema` generates."""
        assert schema_main(["--check"]) == 0

    def test_every_event_example_in_the_docs_validates(self) -> None:
        """The JSON examples of docs/events.md that are events validate against the schema."""
        text = (Path(__file__).parents[1] / "docs" / "events.md").read_text()
        blocks = [block.split("```", 1)[0] for block in text.split("```json\n")[1:]]
        events = [json.loads(block) for block in blocks if '"event_id"' in block]
        assert events
        for event in events:
            jsonschema.validate(event, build_schema())


class TestArchitectureDoc:
    def test_the_import_graph_in_the_docs_is_current(self) -> None:
        """docs/architecture.md shows the import graph the code has (`python docs/import_graph.py --write`)."""
        import importlib.util

        spec = importlib.util.spec_from_file_location("import_graph", Path(__file__).parents[1] / "docs" /
                                                      "import_graph.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.mermaid() in module.ARCHITECTURE.read_text()

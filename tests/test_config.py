"""Configuration: strict validation with key paths, secrets that never leak, the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent import preflight
from agent.config import ConfigError, load_config, parse_config
from agent.sinks.mqtt import MqttSinkConfig
from tests.conftest import ProbeTask  # noqa: F401 - registers the probe task

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"device": "d1", "sources": [{"kind": "zmq", "endpoint": "tcp://127.0.0.1:5556"}],
           "sinks": [{"kind": "console"}], "tasks": {}}


def errors_of(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


class TestValidation:
    def test_minimal_config_is_valid(self) -> None:
        """A device, one source, one sink and no tasks is a valid config with defaults filled in."""
        config = parse_config(MINIMAL)
        assert config.backend.kind == "onnxruntime" and config.task_configs() == {}

    def test_unknown_keys_are_rejected_with_their_path(self) -> None:
        """Typos anywhere are errors naming the full key path."""
        message = errors_of({**MINIMAL, "sinks": [{"kind": "mqtt", "hots": "x"}], "extra": 1})
        assert "sinks.0.hots: Extra inputs are not permitted" in message
        assert "extra: Extra inputs are not permitted" in message

    def test_all_errors_are_reported_at_once(self) -> None:
        """Several errors come back together, each on its own line."""
        message = errors_of({**MINIMAL, "device": "bad id!", "stats_interval_s": -1,
                             "sources": [{"kind": "zmq"}]})
        assert "3 error(s)" in message
        assert "device:" in message and "stats_interval_s:" in message and "sources.0.endpoint: Field required" \
            in message

    def test_unknown_task_and_bad_task_field(self) -> None:
        """Task settings are validated by the task's own config type."""
        message = errors_of({**MINIMAL, "tasks": {"nosuch": {}, "probe": {"threshold": "high"}}})
        assert "tasks.nosuch: Extra inputs are not permitted" in message
        assert "tasks.probe.threshold: Input should be a valid number" in message

    def test_unknown_source_kind(self) -> None:
        """The tagged union names the allowed kinds."""
        message = errors_of({**MINIMAL, "sources": [{"kind": "kafka"}]})
        assert "sources.0" in message and "'mqtt'" in message

    def test_backend_union(self) -> None:
        """Backends are a tagged union; TensorRT settings validate without tensorrt installed."""
        config = parse_config({**MINIMAL, "backend": {"kind": "tensorrt", "fp16": False}})
        assert config.backend.kind == "tensorrt"
        assert "backend.fp17" in errors_of({**MINIMAL, "backend": {"kind": "tensorrt", "fp17": True}})

    def test_yaml_errors_name_the_file(self, tmp_path: Path) -> None:
        """Unreadable or non-mapping YAML fails with the file name."""
        path = tmp_path / "agent.yaml"
        path.write_text("- just\n- a list\n")
        with pytest.raises(ConfigError, match=r"agent\.yaml: the top level must be a mapping"):
            load_config(path)
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(tmp_path / "missing.yaml")


class TestSecrets:
    def test_secret_from_file_and_env_and_never_in_repr(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Passwords are read from a file or env var and masked in every representation."""
        secret_file = tmp_path / "password"
        secret_file.write_text("hunter2\n")
        monkeypatch.setenv("BROKER_PASSWORD", "s3cret")
        config = parse_config({**MINIMAL, "sinks": [
            {"kind": "mqtt", "username": "u", "password": {"file": str(secret_file)}},
            {"kind": "mqtt", "username": "u", "password": {"env": "BROKER_PASSWORD"}}]})
        first, second = (sink.password for sink in config.sinks if isinstance(sink, MqttSinkConfig))
        assert first is not None and second is not None
        assert first.read().get_secret_value() == "hunter2"
        assert second.read().get_secret_value() == "s3cret"
        assert "hunter2" not in repr(first.read()) and "hunter2" not in str(first.read())

    def test_secret_needs_exactly_one_source(self) -> None:
        """A secret with both or neither of file/env is an error."""
        message = errors_of({**MINIMAL, "sinks": [{"kind": "mqtt", "password": {}}]})
        assert "sinks.0.password" in message and "exactly one" in message


class TestShippedConfigs:
    @pytest.mark.parametrize("name", ["demo.yaml", "factory.example.yaml"])
    def test_example_configs_are_valid(self, name: str) -> None:
        """The configs in config/ validate (the factory one names secrets it does not read at validation)."""
        config = load_config(REPO / "config" / name)
        assert config.device

    @pytest.mark.parametrize("name", ["demo.yaml", "factory.example.yaml", "mqtt-quickstart.yaml"])
    def test_example_configs_draw_no_warning(self, name: str) -> None:
        """validate-config has nothing to warn about in the shipped configs (the factory example once cut one
        window per 1,200 snapshots with `hop_s: 1200` on a continuous stream)."""
        assert preflight.warnings(load_config(REPO / "config" / name)) == []

    def test_factory_example_is_commented(self) -> None:
        """The factory example explains itself: most settings carry a comment."""
        text = (REPO / "config" / "factory.example.yaml").read_text()
        assert text.count("#") > 20 and yaml.safe_load(text)["device"]

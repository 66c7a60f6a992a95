"""Every expected failure of the real ``edge-agent`` CLI ends with one line on stderr and a non-zero exit code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sensors.recording import RecordingWriter
from tests.cli_runner import WITHOUT_DAC, cli, config_dict, fails_with
from tests.conftest import Broker, free_port


def agent_config(path: Path, state_dir: Path, **changes: Any) -> Path:
    """A small valid agent config written to ``path``."""
    path.write_text(yaml.safe_dump(config_dict(state_dir, **changes)))
    return path


def one_message_recording(path: Path) -> Path:
    with RecordingWriter(path) as writer:
        writer.write(b"not a wire message", 1_000_000_000)
    return path


class TestReplay:
    def test_missing_file(self, tmp_path: Path) -> None:
        fails_with(cli("replay", tmp_path / "none.mcap", "--zmq", "tcp://127.0.0.1:1"), 1,
                   "none.mcap", "no such file")

    def test_not_mcap(self, tmp_path: Path) -> None:
        text = tmp_path / "notes.txt"
        text.write_text("hello\n")
        fails_with(cli("replay", text, "--zmq", "tcp://127.0.0.1:1"), 1, "not an MCAP recording")

    def test_empty_file(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.mcap"
        empty.touch()
        fails_with(cli("replay", empty, "--zmq", f"tcp://127.0.0.1:{free_port()}"), 1, "is empty")

    def test_recording_without_messages(self, tmp_path: Path) -> None:
        with RecordingWriter(tmp_path / "none.mcap"):
            pass
        fails_with(cli("replay", tmp_path / "none.mcap", "--zmq", f"tcp://127.0.0.1:{free_port()}", "--fast"), 1,
                   "no sensor messages")

    def test_broker_refuses_the_connection(self, tmp_path: Path) -> None:
        recording = one_message_recording(tmp_path / "one.mcap")
        fails_with(cli("replay", recording, "--mqtt", f"127.0.0.1:{free_port()}"), 69,
                   "cannot reach MQTT broker", "is it running")

    def test_debug_shows_the_traceback(self, tmp_path: Path) -> None:
        """``--debug`` before or after the command name."""
        for args in (("--debug", "replay", tmp_path / "none.mcap"), ("replay", tmp_path / "none.mcap", "--debug")):
            result = cli(*args, "--zmq", "tcp://127.0.0.1:1")
            assert result.returncode != 0
            assert "Traceback" in result.stderr and "RecordingError" in result.stderr


class TestRecord:
    def test_out_into_a_missing_folder(self, tmp_path: Path) -> None:
        """The folder is checked before the broker: the message is about --out, although no broker runs."""
        fails_with(cli("record", "--mqtt", f"127.0.0.1:{free_port()}", "--out", tmp_path / "no" / "x.mcap"), 1,
                   "folder", "does not exist")

    def test_no_broker(self, tmp_path: Path) -> None:
        out = tmp_path / "x.mcap"
        fails_with(cli("record", "--mqtt", f"127.0.0.1:{free_port()}", "--out", out, "--connect-timeout", "1"),
                   69, "no MQTT broker", "--mqtt")
        assert not out.exists()

    def test_records_from_a_live_broker(self, tmp_path: Path, broker: Broker) -> None:
        """The broker check does not get in the way of a normal recording."""
        result = cli("record", "--mqtt", f"127.0.0.1:{broker.port}", "--out", tmp_path / "x.mcap",
                     "--duration", "0.5")
        assert result.returncode == 0, result.stderr
        assert "recorded 0 messages" in result.stdout


def test_check_replay_missing_file(tmp_path: Path) -> None:
    fails_with(cli("check-replay", tmp_path / "events.jsonl", tmp_path / "expected.jsonl"), 1,
               "events.jsonl", "no such file")


def test_run_recording_missing_file(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", tmp_path / "state")
    fails_with(cli("run", "--config", config, "--recording", tmp_path / "line3.mcap"), 1,
               "line3.mcap", "no such file")


def test_run_recording_damaged_half_way(tmp_path: Path) -> None:
    """A recording that opens but is damaged inside: the agent stops at the damage and says so (not exit 0)."""
    recording = tmp_path / "damaged.mcap"
    with RecordingWriter(recording, chunk_size=1024) as writer:
        for index in range(200):
            writer.write(bytes(range(256)) * 4, 1_000_000_000 + index)
    data = bytearray(recording.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 50] = bytes(byte ^ 0xFF for byte in data[middle:middle + 50])
    recording.write_bytes(bytes(data))
    config = agent_config(tmp_path / "agent.yaml", tmp_path / "state")
    fails_with(cli("run", "--config", config, "--recording", recording), 1, "damaged.mcap is damaged",
               "events up to that point")


def test_reset_baseline_matching_nothing(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "agent.yaml", tmp_path / "state")
    fails_with(cli("reset-baseline", "--config", config, "pump-7"), 1, "no learned baseline matches 'pump-7'")


def test_bad_host_port(tmp_path: Path) -> None:
    recording = one_message_recording(tmp_path / "one.mcap")
    fails_with(cli("replay", recording, "--mqtt", "localhost"), 1, "expected host:port")


def test_read_only_state_directory(tmp_path: Path) -> None:
    """A state directory the agent cannot write is one line naming it, not sqlite3's traceback."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    config = agent_config(tmp_path / "agent.yaml", state)
    prefix = WITHOUT_DAC if os.geteuid() == 0 else None
    fails_with(cli("run", "--config", config, "--duration", "1", prefix=prefix), 1,
               f"cannot write in {state}", "state_dir")


class TestTail:
    def test_no_broker(self) -> None:
        fails_with(cli("tail", "--mqtt", f"127.0.0.1:{free_port()}", "--connect-timeout", "1"), 69,
                   "no MQTT broker", "Connection refused")

    def test_missing_ca_file(self, tmp_path: Path) -> None:
        fails_with(cli("tail", "--mqtt", f"127.0.0.1:{free_port()}", "--ca", tmp_path / "ca.crt"), 1,
                   "TLS: cannot use", "ca.crt")

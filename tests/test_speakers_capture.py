"""``edge-agent capture audio`` end to end: a real audio file (written by PyAV) -> the adapter -> a real
Mosquitto broker -> a running agent's speakers task -> speaker_turn events; and the adapter's failures."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.testing import RunningAgent, wait_until
from sensors.capture import capture, parse_source, write_audio
from sensors.wire import decode
from tests.cli_runner import cli, fails_with
from tests.conftest import Broker
from tests.speakers_support import HIGH, LOW, dialogue, standin


@pytest.fixture
def speakers_agent(tmp_path: Path, broker: Broker) -> Iterator[RunningAgent]:
    model = standin(tmp_path / "model")
    config = {"device": "hall-1", "state_dir": str(tmp_path / "state"),
              "sources": [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}],
              "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
              "log": {"level": "warning", "format": "json"},
              "tasks": {"speakers": {"model": str(model), "sensors": ["mic-*"], "queue_size": 2000}}}
    running = RunningAgent(config)
    yield running
    running.stop()


def events(path: Path, event_type: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [event for line in lines if line.endswith("}") and (event := json.loads(line))["type"] == event_type]


class TestCaptureEndToEnd:
    @pytest.mark.parametrize("suffix", [".flac", ".wav"])
    def test_a_file_becomes_speaker_turns(self, tmp_path: Path, broker: Broker, speakers_agent: RunningAgent,
                                          suffix: str) -> None:
        """A FLAC/WAV of two speakers taking turns, published by the CLI adapter, gives four turns in two
        clusters in the agent's events, at the file's timing."""
        audio, truth = dialogue([LOW, HIGH, LOW, HIGH])
        path = tmp_path / f"talk{suffix}"
        write_audio(str(path), audio, 16_000)
        broker.wait_for_subscription("edge/sensors/+/+")
        result = cli("capture", "audio", "--input", path, "--sensor", "mic-01", "--mqtt", f"127.0.0.1:{broker.port}",
                     "--fast")
        assert result.returncode == 0, result.stderr
        assert "published" in result.stdout
        def four_turns() -> list[dict[str, Any]] | None:
            found = events(tmp_path / "events.jsonl", "speaker_turn")
            return found if len(found) >= 4 else None

        found = wait_until(four_turns, 60, 0.2, "fewer than 4 speaker_turn events")
        labels = [event["body"]["cluster"] for event in found]
        assert labels[0] == labels[2] != labels[1] == labels[3]
        starts = [event["body"]["start"] for event in found]
        assert starts == sorted(starts)
        durations = [event["body"]["duration_s"] for event in found]
        assert np.allclose(durations, [end - start for start, end, _ in truth], atol=0.5)


class TestCaptureAdapter:
    def test_resampled_chunks_keep_the_timing(self, tmp_path: Path) -> None:
        """A 3 s 16 kHz file resampled to 48 kHz comes out as int16 chunks of chunk_s stamped by sample count."""
        path = tmp_path / "tone.wav"
        write_audio(str(path), np.sin(np.arange(48_000) / 10).astype(np.float32) * 0.5, 16_000)
        got: list[Any] = []
        count = capture(str(path), "mic-02", lambda topic, raw: got.append((topic, decode(raw))), fast=True,
                        rate=48_000, chunk_s=0.2, start_ns=10**18)
        assert count == len(got) == 15
        assert {topic for topic, _ in got} == {"edge/sensors/audio/mic-02"}
        messages = [message for _, message in got]
        assert [m.seq for m in messages] == list(range(15))
        assert all(m.samples.dtype == np.int16 and m.sample_rate == 48_000 for m in messages)
        assert [m.timestamp_ns for m in messages] == [10**18 + i * 200_000_000 for i in range(15)]

    def test_a_url_is_read_like_a_file(self, tmp_path: Path) -> None:
        """The same FLAC served over HTTP (a real local server) gives the same messages as the file."""
        path = tmp_path / "talk.flac"
        write_audio(str(path), np.sin(np.arange(32_000) / 7).astype(np.float32) * 0.3, 16_000)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            from_url: list[Any] = []
            capture(f"http://127.0.0.1:{server.server_address[1]}/talk.flac", "mic-03",
                    lambda topic, raw: from_url.append(decode(raw)), fast=True, start_ns=10**18)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
        from_file: list[Any] = []
        capture(str(path), "mic-03", lambda topic, raw: from_file.append(decode(raw)), fast=True, start_ns=10**18)
        assert len(from_url) == len(from_file) == 20
        assert all(np.array_equal(a.samples, b.samples) for a, b in zip(from_url, from_file, strict=True))

    def test_devices_are_named_by_their_ffmpeg_input(self) -> None:
        assert parse_source("alsa:hw:1,0") == ("hw:1,0", "alsa", True)
        assert parse_source("pulse:default") == ("default", "pulse", True)
        assert parse_source("http://host/a.mp3") == ("http://host/a.mp3", None, False)
        assert parse_source("talk.flac") == ("talk.flac", None, False)

    def test_a_missing_file_fails_before_connecting(self, tmp_path: Path) -> None:
        """One line naming the input, exit code of an expected failure, no traceback (no broker was needed)."""
        result = cli("capture", "audio", "--input", tmp_path / "none.wav", "--sensor", "mic-01", "--mqtt",
                     "127.0.0.1:9")
        fails_with(result, result.returncode, "cannot open")
        assert result.returncode != 0

    def test_a_file_without_audio_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "text.wav"
        path.write_text("not audio at all")
        result = cli("capture", "audio", "--input", path, "--sensor", "mic-01", "--mqtt", "127.0.0.1:9")
        assert result.returncode != 0 and "Traceback" not in result.stderr

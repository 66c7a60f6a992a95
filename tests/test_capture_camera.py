"""``edge-agent capture camera`` end to end: a real video file (written by PyAV from simulated tube parts) ->
the adapter -> a real Mosquitto broker -> a running agent's quality task -> part_inspected events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.testing import RunningAgent, wait_until
from sensors.capture import capture_camera
from sensors.simulate.camera import CameraSimulator
from sensors.wire import Encoding, Kind, decode
from tests.cli_runner import cli, fails_with
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[1]
VIDEO_FPS = 8


def write_video(path: Path, frames: int, defect_rate: float = 0.5) -> None:
    """Simulated parts, one per video frame at VIDEO_FPS, as an MPEG-4 file written by PyAV."""
    import av

    simulator = CameraSimulator("video", defect_rate=defect_rate, seed=4)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        first = simulator.render(0).image
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            gray = simulator.render(index).image
            rgb = np.repeat(gray[:, :, None], 3, axis=2) if gray.ndim == 2 else gray
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_frames_are_taken_at_the_asked_rate_as_jpeg(tmp_path: Path) -> None:
    """A 2 s video at 8 frames/s, taken at 2 frames/s: 4 JPEG frames, 0.5 s apart in source time."""
    video = tmp_path / "line.mp4"
    write_video(video, 2 * VIDEO_FPS)
    sent: list[bytes] = []
    count = capture_camera(str(video), "camera-07", lambda topic, raw: sent.append(raw), fps=2, fast=True,
                           start_ns=10**18)
    messages = [decode(raw) for raw in sent]
    assert count == 4 and [m.seq for m in messages] == [0, 1, 2, 3]
    assert all(m.kind == Kind.FRAME and m.encoding == Encoding.JPEG for m in messages)
    assert [m.timestamp_ns - 10**18 for m in messages] == [0, 500_000_000, 1_000_000_000, 1_500_000_000]


@pytest.fixture
def quality_agent(tmp_path: Path, broker: Broker) -> Iterator[RunningAgent]:
    config = {"device": "line-7", "state_dir": str(tmp_path / "state"),
              "sources": [{"kind": "mqtt", "host": "127.0.0.1", "port": broker.port}],
              "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
              "log": {"level": "warning", "format": "json"},
              "tasks": {"quality": {"model": str(REPO / "models" / "quality"), "sensors": ["camera-*"],
                                    "queue_size": 64}}}
    running = RunningAgent(config)
    yield running
    running.stop()


def test_a_video_file_becomes_inspected_parts(tmp_path: Path, broker: Broker, quality_agent: RunningAgent) -> None:
    video = tmp_path / "line.mp4"
    write_video(video, 3 * VIDEO_FPS)
    broker.wait_for_subscription("edge/sensors/+/+")
    result = cli("capture", "camera", "--input", video, "--sensor", "camera-07", "--fps", "2", "--fast",
                 "--mqtt", f"127.0.0.1:{broker.port}")
    assert result.returncode == 0, result.stderr
    assert "published 6 frames" in result.stdout

    def inspected() -> list[dict[str, Any]] | None:
        path = tmp_path / "events.jsonl"
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        parts = [event for event in found if event["type"] == "part_inspected"]
        return parts if len(parts) >= 6 else None

    parts = wait_until(inspected, 90, 0.2, "fewer than 6 part_inspected events")
    assert {event["sensor"] for event in parts} == {"camera-07"}
    assert {event["body"]["frame"]["width"] for event in parts} == {CameraSimulator("x").render(0).image.shape[1]}


def test_a_file_without_video_is_refused_before_connecting(tmp_path: Path) -> None:
    from sensors.capture import write_audio

    audio = tmp_path / "tone.wav"
    write_audio(str(audio), np.zeros(1600), 16_000)
    fails_with(cli("capture", "camera", "--input", audio, "--sensor", "camera-07", "--mqtt", "127.0.0.1:1"), 1,
               "has no video stream")

"""Tests for MCAP recordings (sensors/recording.py) and replay to real MQTT and ZeroMQ (sensors/replay.py)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from mcap.reader import make_reader
from PIL import Image

from agent.testing import Subscriber
from sensors.errors import BrokerError
from sensors.recording import (
    MESSAGE_ENCODING,
    RECORDER_METADATA,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    invalid_topic,
    record_to,
)
from sensors.replay import MqttPublisher, ZmqPublisher, replay
from sensors.topics import DEFAULT_PREFIX, sensor_topic
from sensors.wire import Encoding, Kind, SensorMessage, decode, encode
from tests.conftest import Broker, free_port

T0 = 1_795_939_200_000_000_000
STEP_NS = 100_000_000  # 0.1 s
JPEG = io.BytesIO()
Image.new("RGB", (16, 8), (90, 120, 30)).save(JPEG, "JPEG")

Entry = tuple[int, str, bytes]


def stream(steps: int = 21) -> list[Entry]:
    """Two vibration sensors, a microphone and a camera, 0.1 s apart, in log-time order."""
    rng = np.random.default_rng(3)
    entries = []
    for step in range(steps):
        ts = T0 + step * STEP_NS
        messages = [
            SensorMessage(f"pump-{n}", Kind.VIBRATION, step, ts, rng.normal(size=(256, 3)).astype(np.float32),
                          2560.0) for n in (1, 2)
        ]
        messages.append(SensorMessage("mic-1", Kind.AUDIO, step, ts, rng.integers(-999, 999, (1600, 1),
                                                                                     dtype=np.int16), 16_000.0))
        if step % 5 == 0:
            messages.append(SensorMessage("cam-1", Kind.FRAME, step // 5, ts, JPEG.getvalue(),
                                          encoding=Encoding.JPEG, meta={"part_id": f"P-{step:06d}"}))
        for offset, message in enumerate(messages):
            entries.append((ts + offset * 1000, sensor_topic(DEFAULT_PREFIX, message.kind, message.sensor_id),
                            encode(message)))
    return entries


def write(path: Path, entries: list[Entry], **options: float) -> Path:
    with RecordingWriter(path, **options) as writer:  # type: ignore[arg-type]
        for log_time, _, wire in entries:
            writer.write(wire, log_time)
    return path


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    return stream()


@pytest.fixture
def recording(tmp_path: Path, entries: list[Entry]) -> Path:
    return write(tmp_path / "line3.mcap", entries)


class TestRoundTrip:
    """What the writer stores, the reader gives back: bytes, topics, log times, metadata."""

    def test_messages_and_topics(self, recording: Path, entries: list[Entry]) -> None:
        """Every message comes back byte for byte, on its sensor's topic, in log-time order."""
        with RecordingReader(recording) as reader:
            assert reader.complete and reader.damage is None
            assert list(reader) == entries
            assert reader.topics() == sorted({topic for _, topic, _ in entries})

    def test_log_time_order_across_sensors(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Messages written out of log-time order are read back sorted by log time."""
        shuffled = [entries[i] for i in np.random.default_rng(1).permutation(len(entries))]
        with RecordingReader(write(tmp_path / "shuffled.mcap", shuffled, chunk_size=4096)) as reader:
            assert [entry[0] for entry in reader] == sorted(entry[0] for entry in entries)

    def test_topic_filter(self, recording: Path, entries: list[Entry]) -> None:
        """messages(topics=...) yields only those sensors."""
        wanted = sensor_topic(DEFAULT_PREFIX, Kind.FRAME, "cam-1")
        with RecordingReader(recording) as reader:
            assert list(reader.messages([wanted])) == [e for e in entries if e[1] == wanted]

    def test_channels_are_wire_format(self, recording: Path) -> None:
        """Plain MCAP tools see one schema-less edge-agent-wire/1 channel per sensor topic."""
        with recording.open("rb") as file:
            summary = make_reader(file).get_summary()
            assert summary is not None
            assert len(summary.channels) == 4
            assert {(c.message_encoding, c.schema_id) for c in summary.channels.values()} == {(MESSAGE_ENCODING, 0)}

    def test_metadata(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Ground truth written as metadata comes back with its JSON types, beside the recorder's own."""
        truth = {"faulty": ["pump-2"], "fault_onset_ns": T0 + 10**9, "severity": 0.5, "note": "bearing"}
        with RecordingWriter(tmp_path / "gt.mcap") as writer:
            writer.write_metadata("ground_truth", truth)
            writer.write(entries[0][2], entries[0][0])
        with RecordingReader(tmp_path / "gt.mcap") as reader:
            metadata = reader.metadata()
        assert metadata["ground_truth"] == truth
        assert metadata[RECORDER_METADATA]["wire_format"] == MESSAGE_ENCODING

    def test_duplicate_metadata_name(self, tmp_path: Path) -> None:
        """A metadata name can be written once."""
        with RecordingWriter(tmp_path / "dup.mcap") as writer:
            writer.write_metadata("ground_truth", {"a": 1})
            with pytest.raises(RecordingError, match="ground_truth"):
                writer.write_metadata("ground_truth", {"a": 2})

    def test_invalid_bytes_are_kept(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Bytes that do not decode are recorded under the invalid topic and counted."""
        broken = entries[0][2][:-1]
        with RecordingWriter(tmp_path / "bad.mcap") as writer:
            assert writer.write(broken, T0) == invalid_topic(DEFAULT_PREFIX)
            writer.write(entries[1][2], entries[1][0])
            assert (writer.count, writer.invalid) == (2, 1)
        with RecordingReader(tmp_path / "bad.mcap") as reader:
            assert next(iter(reader)) == (T0, invalid_topic(DEFAULT_PREFIX), broken)

    def test_record_to_copies(self, recording: Path, tmp_path: Path, entries: list[Entry]) -> None:
        """record_to writes (log_time, topic, bytes) tuples, e.g. a whole other recording, unchanged."""
        with RecordingReader(recording) as reader, RecordingWriter(tmp_path / "copy.mcap") as writer:
            assert record_to(writer, reader) == len(entries)
        with RecordingReader(tmp_path / "copy.mcap") as copy:
            assert list(copy) == entries

    def test_write_after_close(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Writing to a closed recording is an error, not a silent loss."""
        writer = RecordingWriter(tmp_path / "closed.mcap")
        writer.close()
        with pytest.raises(RecordingError, match="closed"):
            writer.write(entries[0][2], T0)

    def test_not_mcap(self, tmp_path: Path) -> None:
        """A file that is not MCAP is refused with a clear error."""
        path = tmp_path / "notes.txt"
        path.write_bytes(b"hello, this is not a recording")
        with pytest.raises(RecordingError, match="not an MCAP recording"):
            RecordingReader(path)


class TestDamagedFiles:
    """A recording whose writer died is readable up to the damage; corruption is a clear error."""

    def test_truncated_anywhere(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Cut at any point, the reader returns a prefix of the messages, growing with the cut."""
        data = write(tmp_path / "full.mcap", entries, chunk_size=8192).read_bytes()
        path = tmp_path / "cut.mcap"
        recovered = []
        for cut in np.linspace(8, len(data) - 1, 40).astype(int):
            path.write_bytes(data[:cut])
            with RecordingReader(path) as reader:
                assert not reader.complete and reader.damage
                got = list(reader)
            assert got == entries[:len(got)]
            recovered.append(len(got))
        assert recovered == sorted(recovered) and 0 < recovered[len(recovered) // 2] < len(entries)
        assert recovered[-1] == len(entries)  # only the summary was cut off

    def test_truncated_metadata_survives(self, tmp_path: Path, entries: list[Entry]) -> None:
        """Metadata written before the damage is still read."""
        with RecordingWriter(tmp_path / "gt.mcap", chunk_size=4096) as writer:
            writer.write_metadata("ground_truth", {"faulty": ["pump-2"]})
            for log_time, _, wire in entries:
                writer.write(wire, log_time)
        data = (tmp_path / "gt.mcap").read_bytes()
        (tmp_path / "gt.mcap").write_bytes(data[: len(data) // 2])
        with RecordingReader(tmp_path / "gt.mcap") as reader:
            assert reader.metadata()["ground_truth"] == {"faulty": ["pump-2"]}

    def test_killed_writer(self, tmp_path: Path) -> None:
        """A writer process killed with SIGKILL leaves a file with everything flushed before the kill."""
        path = tmp_path / "killed.mcap"
        script = (
            "import sys, time\n"
            "from sensors.recording import RecordingWriter\n"
            "from tests.test_recording import stream\n"
            f"writer = RecordingWriter({str(path)!r}, flush_interval_s=0.0)\n"
            "for log_time, _, wire in stream(10):\n"
            "    writer.write(wire, log_time)\n"
            "print('written', flush=True)\n"
            "time.sleep(60)\n"  # killed while it waits: the kill is the test
        )
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parents[1]) as process:
            try:
                assert process.stdout is not None and process.stdout.readline() == b"written\n"
            finally:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        with RecordingReader(path) as reader:
            assert not reader.complete
            assert list(reader) == stream(10)  # each write was flushed, so nothing is lost

    def test_corrupted_chunk(self, tmp_path: Path, entries: list[Entry]) -> None:
        """A complete file with a damaged chunk fails with a RecordingError naming the file."""
        path = write(tmp_path / "corrupt.mcap", entries, chunk_size=8192)
        data = bytearray(path.read_bytes())
        data[200] ^= 0xFF  # inside the first chunk's compressed records
        path.write_bytes(bytes(data))
        with RecordingReader(path) as reader, pytest.raises(RecordingError, match=r"corrupt\.mcap is damaged"):
            list(reader)


def timed_replay(entries: list[Entry], speed: float | None) -> tuple[float, list[tuple[float, str, bytes]]]:
    published: list[tuple[float, str, bytes]] = []
    start = time.monotonic()
    count = replay(entries, lambda topic, wire: published.append((time.monotonic() - start, topic, wire)), speed)
    assert count == len(entries)
    return time.monotonic() - start, published


class TestReplayTiming:
    """replay keeps the recorded timing, scaled by speed, or goes as fast as possible."""

    def test_speed_10(self, recording: Path) -> None:
        """A 2 s recording at speed 10 takes about 0.2 s, with every message in order."""
        with RecordingReader(recording) as reader:
            entries = list(reader)
        elapsed, published = timed_replay(entries, 10.0)
        assert 0.18 <= elapsed < 0.6
        assert [(topic, wire) for _, topic, wire in published] == [(t, w) for _, t, w in entries]

    def test_as_fast_as_possible(self, entries: list[Entry]) -> None:
        """speed=None does not wait at all: much faster than speed 10."""
        elapsed, _ = timed_replay(entries, None)
        assert elapsed < 0.1

    def test_original_timing(self, entries: list[Entry]) -> None:
        """At speed 1 each message goes out at its recorded offset from the first (within 50 ms)."""
        head = [e for e in entries if e[0] < T0 + 4 * STEP_NS]
        _, published = timed_replay(head, 1.0)
        for (log_time, _, _), (sent_at, _, _) in zip(head, published, strict=True):
            assert abs(sent_at - (log_time - T0) / 1e9) < 0.05

    def test_stop_interrupts_a_wait(self) -> None:
        """Setting stop ends a replay promptly even while it waits for a message far in the future."""
        stop = threading.Event()
        threading.Timer(0.1, stop.set).start()
        start = time.monotonic()
        count = replay([(T0, "a", b"x"), (T0 + 100 * 10**9, "a", b"y")], lambda t, w: None, 1.0, stop)
        assert count == 1 and time.monotonic() - start < 1.0

    @pytest.mark.parametrize("speed", [0.0, -1.0, float("nan"), float("inf")])
    def test_bad_speed(self, speed: float) -> None:
        """A speed that is not a positive finite number is refused."""
        with pytest.raises(ValueError, match="speed"):
            replay([], lambda t, w: None, speed)


class TestMqttReplay:
    """Replay through MqttPublisher to a real Mosquitto delivers every message intact."""

    def test_everything_arrives_intact(self, broker: Broker, recording: Path, entries: list[Entry]) -> None:
        """All messages reach a subscriber byte for byte, in order per sensor, frames with QoS 0."""
        with Subscriber(broker.port, f"{DEFAULT_PREFIX}/sensors/#") as subscriber:
            with MqttPublisher("127.0.0.1", broker.port) as publisher, RecordingReader(recording) as reader:
                assert replay(reader, publisher.publish, None) == len(entries)
            received = subscriber.wait_for(len(entries))
            qos = dict(zip((topic for topic, _ in received), subscriber.qos, strict=True))
        assert sorted(received) == sorted((topic, wire) for _, topic, wire in entries)
        for topic in {topic for _, topic, _ in entries}:
            assert [w for t, w in received if t == topic] == [w for _, t, w in entries if t == topic]
        assert qos[sensor_topic(DEFAULT_PREFIX, Kind.FRAME, "cam-1")] == 0
        assert qos[sensor_topic(DEFAULT_PREFIX, Kind.VIBRATION, "pump-1")] == 1

    def test_no_broker(self) -> None:
        """Connecting to a port where no broker listens fails at once with a BrokerError."""
        with pytest.raises(BrokerError, match="cannot reach MQTT broker"):
            MqttPublisher("127.0.0.1", free_port(), timeout_s=2)


class TestZmqReplay:
    """Replay through ZmqPublisher to real ZeroMQ sockets delivers every message intact."""

    @pytest.fixture
    def socket(self) -> Iterator[Callable[[int], zmq.Socket[bytes]]]:
        """Makes receiving sockets that are closed after the test."""
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sockets = []

        def make(kind: int) -> zmq.Socket[bytes]:
            sockets.append(context.socket(kind))
            sockets[-1].setsockopt(zmq.RCVTIMEO, 10_000)  # a missing message fails the test, not hangs it
            sockets[-1].setsockopt(zmq.LINGER, 0)
            return sockets[-1]

        yield make
        for each in sockets:
            each.close(linger=0)
        context.term()

    def test_push_pull(self, socket: Callable[[int], zmq.Socket[bytes]], entries: list[Entry]) -> None:
        """PUSH sends one frame per message to a bound PULL socket (the agent's default)."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        pull = socket(zmq.PULL)
        pull.bind(endpoint)
        with ZmqPublisher(endpoint, mode="push") as publisher:
            replay(entries, publisher.publish, None)
        received = [pull.recv_multipart() for _ in entries]
        assert received == [[wire] for _, _, wire in entries]
        assert not pull.poll(100)

    def test_pub_sub(self, socket: Callable[[int], zmq.Socket[bytes]], entries: list[Entry]) -> None:
        """A bound PUB sends [topic, bytes]; once the subscriber has joined, nothing is lost."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        sub = socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        with ZmqPublisher(endpoint, mode="pub", bind=True, sndhwm=10) as publisher:
            sub.connect(endpoint)
            assert publisher.wait_for_subscriber(5.0)
            replay(entries, publisher.publish, None)
            received = [sub.recv_multipart() for _ in entries]
        assert received == [[topic.encode(), wire] for _, topic, wire in entries]
        assert decode(received[0][1]).sensor_id == "pump-1"

    def test_pub_connects_to_bound_sub(self, socket: Callable[[int], zmq.Socket[bytes]],
                                       entries: list[Entry]) -> None:
        """PUB can also connect to a SUB that binds (as an agent configured with socket: sub does)."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        sub = socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, DEFAULT_PREFIX.encode())
        sub.bind(endpoint)
        with ZmqPublisher(endpoint, mode="pub") as publisher:
            # libzmq sends a bound SUB's subscriptions only once the SUB socket is polled
            # (zeromq/pyzmq#1650); an agent's receiving thread always is.
            deadline = time.monotonic() + 5
            while not publisher.wait_for_subscriber(0.02) and time.monotonic() < deadline:
                sub.poll(10)
            replay(entries[:10], publisher.publish, None)
            assert [sub.recv_multipart()[1] for _ in range(10)] == [wire for _, _, wire in entries[:10]]

    def test_push_without_peer_times_out(self) -> None:
        """With no peer connected, PUSH raises a BrokerError instead of blocking forever."""
        with ZmqPublisher(f"tcp://127.0.0.1:{free_port()}", mode="push", send_timeout_s=0.2,
                          linger_s=0) as publisher, pytest.raises(BrokerError, match="no peer"):
            publisher.publish("t", b"x")

"""Recordings of sensor streams in MCAP files: one channel per sensor topic, wire bytes unchanged.

Layout (any MCAP tool can list, cut and merge these files):

- one channel per topic (``{prefix}/sensors/{kind}/{sensor_id}``), message encoding
  ``edge-agent-wire/1``, no schema (channel metadata ``format_doc`` points at
  docs/wire-format.md); a message's data is exactly the wire bytes that were received
  and its log time is when they were received, in Unix nanoseconds;
- messages that fail to decode are kept too (to replay faults), on the topic
  ``{prefix}/sensors/invalid/unknown``;
- metadata records: ``edge-agent`` (recorder information) and any the caller adds, e.g.
  ``ground_truth`` from a simulator. MCAP metadata maps strings to strings, so each value
  is stored as JSON and read back as the original value.

A file whose writer was killed has no summary or footer. :class:`RecordingReader` then
reads it linearly up to the first damaged or missing record (the chunk being written at
the time is lost; the writer finishes a chunk at least every ``flush_interval_s``).
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import zstandard
from mcap.exceptions import McapError
from mcap.reader import SeekingReader
from mcap.records import Channel, DataEnd, Message, Metadata
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from sensors.errors import RecordingError
from sensors.topics import DEFAULT_PREFIX, sensor_topic
from sensors.wire import VERSION, WireError, decode

MESSAGE_ENCODING = f"edge-agent-wire/{VERSION}"
FORMAT_DOC = "docs/wire-format.md"
RECORDER_METADATA = "edge-agent"
MCAP_MAGIC = b"\x89MCAP0\r\n"
# What a damaged file can make the mcap reader raise (lz4 raises RuntimeError on bad data).
DAMAGE_ERRORS = (McapError, ValueError, struct.error, OSError, EOFError, KeyError, IndexError,
                 zstandard.ZstdError, RuntimeError)

Entry = tuple[int, str, bytes]  # (log_time_ns, topic, wire_bytes)


def invalid_topic(prefix: str) -> str:
    """Where the writer files bytes that do not decode, so that a replay reproduces them."""
    return f"{prefix}/sensors/invalid/unknown"


class RecordingWriter:
    """Writes wire messages to an MCAP file; thread-safe; close (or leave the ``with``) to finish it."""

    def __init__(self, path: str | Path, prefix: str = DEFAULT_PREFIX, chunk_size: int = 512 * 1024,
                 flush_interval_s: float = 5.0) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self.count = 0
        self.invalid = 0
        self._flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._channels: dict[str, int] = {}
        self._metadata_names: set[str] = set()
        self._file: BinaryIO = _open(self.path, "wb")
        self._writer: Writer | None = Writer(self._file, chunk_size=chunk_size,
                                             compression=CompressionType.ZSTD)
        self._writer.start(profile="", library="edge-agent")
        self.write_metadata(RECORDER_METADATA, {"wire_format": MESSAGE_ENCODING, "format_doc": FORMAT_DOC,
                                                "topic_prefix": prefix})

    def write(self, wire_bytes: bytes, log_time_ns: int, topic: str | None = None) -> str:
        """Record one message received at ``log_time_ns``; returns the topic it was filed under.

        Without ``topic`` it is derived from the decoded message; bytes that do not decode
        are recorded all the same under :func:`invalid_topic` and counted in ``invalid``.
        """
        valid = True
        if topic is None:
            try:
                message = decode(wire_bytes, max_payload=len(wire_bytes))
                topic = sensor_topic(self.prefix, message.kind, message.sensor_id)
            except WireError:
                topic, valid = invalid_topic(self.prefix), False
        with self._lock:
            writer = self._open_writer()
            self.invalid += not valid
            channel = self._channels.get(topic)
            if channel is None:
                channel = writer.register_channel(topic, MESSAGE_ENCODING, schema_id=0,
                                                  metadata={"format_doc": FORMAT_DOC})
                self._channels[topic] = channel
            writer.add_message(channel, log_time=log_time_ns, data=bytes(wire_bytes),
                               publish_time=log_time_ns, sequence=self.count % 2**32)
            self.count += 1
            if time.monotonic() - self._last_flush > self._flush_interval_s:
                writer.flush()  # bounds what a killed writer loses to the last few seconds
                self._last_flush = time.monotonic()
        return topic

    def write_metadata(self, name: str, values: Mapping[str, Any]) -> None:
        """Store a named metadata record (e.g. ``ground_truth``); values may be any JSON."""
        if name in self._metadata_names:
            raise RecordingError(f"metadata {name!r} was already written to {self.path}")
        encoded = {str(key): json.dumps(value, allow_nan=False) for key, value in values.items()}
        with self._lock:
            self._open_writer().add_metadata(name, encoded)
            self._metadata_names.add(name)

    def _open_writer(self) -> Writer:
        if self._writer is None:
            raise RecordingError(f"recording {self.path} is closed")
        return self._writer

    def close(self) -> None:
        """Write the summary and footer and close the file; idempotent."""
        with self._lock:
            if self._writer is not None:
                self._writer.finish()
                self._writer = None
                self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class RecordingReader:
    """Reads a recording: iterate for ``(log_time_ns, topic, wire_bytes)`` in log-time order.

    ``complete`` is False for a file that was not closed properly; ``damage`` then says
    where reading stopped. Such a file is read into memory at open (sorting needs it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = _open(self.path, "rb")
        self.damage: str | None = None
        self._salvaged: list[Entry] = []
        self._salvaged_metadata: list[Metadata] = []
        try:
            magic = self._file.read(len(MCAP_MAGIC))
            if not magic:
                raise RecordingError(f"{self.path} is empty; record one with 'edge-agent record'")
            if magic != MCAP_MAGIC:
                raise RecordingError(f"{self.path} is not an MCAP recording (bad magic); "
                                     "give a file written by 'edge-agent record'")
            self._file.seek(0)
            self._reader = SeekingReader(self._file, validate_crcs=True)
            self.complete = self._has_summary()
            if not self.complete:
                self._salvage()
        except BaseException:
            self._file.close()
            raise

    def _has_summary(self) -> bool:
        self._file.seek(-len(MCAP_MAGIC), io.SEEK_END)
        if self._file.read() != MCAP_MAGIC:
            return False
        try:
            return self._reader.get_summary() is not None
        except DAMAGE_ERRORS:
            return False

    def _salvage(self) -> None:
        """Linear read up to the first unreadable record, for files without a valid summary."""
        self._file.seek(0)
        channels: dict[int, Channel] = {}
        entries: list[Entry] = []
        try:
            for record in StreamReader(self._file, validate_crcs=True).records:
                if isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    channel = channels[record.channel_id]
                    if channel.message_encoding == MESSAGE_ENCODING:
                        entries.append((record.log_time, channel.topic, record.data))
                elif isinstance(record, Metadata):
                    self._salvaged_metadata.append(record)
                elif isinstance(record, DataEnd):
                    break
            self.damage = "the summary section is missing or damaged"
        except DAMAGE_ERRORS as error:
            self.damage = (f"unreadable after {len(entries)} messages ({type(error).__name__}: {error}); "
                           "the rest of the file is lost")
        entries.sort(key=lambda entry: entry[0])
        self._salvaged = entries

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[Entry]:
        """Messages in log-time order, optionally only those on ``topics``."""
        wanted = None if topics is None else set(topics)
        if not self.complete:
            yield from (entry for entry in self._salvaged if wanted is None or entry[1] in wanted)
            return
        try:
            for _, channel, message in self._reader.iter_messages(
                    topics=None if wanted is None else sorted(wanted), log_time_order=True):
                if channel.message_encoding == MESSAGE_ENCODING:
                    yield message.log_time, channel.topic, message.data
        except DAMAGE_ERRORS as error:
            raise RecordingError(f"{self.path} is damaged: {type(error).__name__}: {error}") from error

    def __iter__(self) -> Iterator[Entry]:
        return self.messages()

    def metadata(self) -> dict[str, dict[str, Any]]:
        """All metadata records by name, values decoded from JSON."""
        try:
            records = self._salvaged_metadata if not self.complete else list(self._reader.iter_metadata())
        except DAMAGE_ERRORS as error:
            raise RecordingError(f"{self.path}: metadata is damaged: {error}") from error
        return {record.name: _decode_metadata(record) for record in records}

    def topics(self) -> list[str]:
        """The sensor topics in the recording (sorted)."""
        if not self.complete:
            return sorted({topic for _, topic, _ in self._salvaged})
        summary = self._reader.get_summary()
        channels = summary.channels.values() if summary is not None else ()
        return sorted(c.topic for c in channels if c.message_encoding == MESSAGE_ENCODING)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _open(path: Path, mode: str) -> BinaryIO:
    """Open a recording file; RecordingError says what is wrong with the path."""
    try:
        file: BinaryIO = path.open(mode)  # type: ignore[assignment]
        return file
    except FileNotFoundError:
        where = f"folder {path.parent} does not exist; create it or" if "w" in mode else "no such file;"
        raise RecordingError(f"{path}: {where} check the path") from None
    except OSError as error:
        raise RecordingError(f"{path}: cannot open: {error.strerror}") from None


def _decode_metadata(record: Metadata) -> dict[str, Any]:
    try:
        return {key: json.loads(value) for key, value in record.metadata.items()}
    except ValueError as error:
        raise RecordingError(f"metadata {record.name!r} is not edge-agent JSON metadata: {error}") from None


def record_to(writer: RecordingWriter, messages: Iterable[Entry]) -> int:
    """Write ``(log_time_ns, topic, wire_bytes)`` tuples (e.g. another reader) to ``writer``; returns the count."""
    count = 0
    for log_time_ns, topic, wire_bytes in messages:
        writer.write(wire_bytes, log_time_ns, topic)
        count += 1
    return count

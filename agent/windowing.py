"""Windowing of continuous streams (vibration, audio) with sequence-gap detection."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.reorder import DEFAULT_REORDER_CHUNKS, ReorderBuffer
from sensors.errors import RejectedInput
from sensors.wire import Kind, SensorMessage

#: the most values (samples x channels) one window may hold: 64 MiB of float32, about 16 s of 1 MHz
MAX_WINDOW_VALUES = 1 << 24
#: in snapshot mode, a silence longer than this share of the window between two chunks starts a new burst
SNAPSHOT_GAP = 0.5
#: a chunk further ahead than ``reorder_chunks`` but at most this many, whose time is where its sequence number
#: puts it, waits in the reorder buffer too: live input overtaking input delivered again after a broker restart
FAR_AHEAD_CHUNKS = 256
#: how far (share of the time skipped, plus one chunk) a chunk's time may be from where its sequence number puts it
IN_STEP_TOLERANCE = 0.1
#: ``skip`` in snapshot mode once a burst's window was cut: the rest of the burst is passed over
_REST_OF_BURST = 1 << 62


@dataclass(frozen=True)
class Window:
    """A fixed-length window of one continuous stream, as float32 (samples, channels)."""

    sensor_id: str
    kind: Kind
    samples: np.ndarray
    sample_rate: float
    start_ns: int
    index: int


@dataclass(frozen=True)
class StreamBreak:
    """Why a stream's window buffer was restarted: a sequence gap or a format change."""

    reason: str
    missing: int = 0


class Windower:
    """Cuts one sensor's chunks into windows of ``window_s`` every ``hop_s``.

    A sequence-number jump or a change of sample rate or channel count restarts
    the buffer (the partial window is discarded, never stitched across the break)
    and is reported as a :class:`StreamBreak`, so no gap passes silently.

    Windows start on the stream's own grid: at sample ``seq x chunk length`` multiples of the hop,
    counted from sequence number 0.  When the buffer (re)starts mid-grid (the agent started while the
    sensor was running, a gap, chunks delivered again after a reconnect or a restart) the samples
    before the next grid point are skipped, so the windows cut are exactly those an uninterrupted
    run would have cut, and events recomputed from redelivered input carry the same source times.

    Each chunk's acknowledgement is held until every window its samples belong to was cut (or the
    buffer holding them was discarded by a break); :meth:`acknowledge`, called once those windows'
    events are stored, releases them.

    Input delivered again from further back does not throw the partial window away: a broker restored
    from its last save sends again what was queued for the agent then (input it used long ago), and the
    live stream follows.  The chunks of the partial window were acknowledged to the broker that died (or
    not at all) and the restored broker has never heard of them, so nobody would send them again.  A step
    back in both sequence number and time therefore *parks* the partial window; when the stream comes
    back to exactly the parked window's next sequence number, the repeated input is dropped and the parked
    window continues.  The parked window is dropped (its chunks acknowledged) once the stream passes that
    number or its time moves past the parked window's (a publisher restart, whose clock goes on).

    Chunks that arrive ahead of the next expected sequence number (of the stream, or of a parked window), at
    most ``reorder_chunks`` ahead, wait in a bounded :class:`~agent.reorder.ReorderBuffer` and are fed in
    sequence order once the gap fills: a sensor's client that sends its unacknowledged chunks again after a
    broker restart may send a later one first.  So do chunks further ahead (at most
    :data:`FAR_AHEAD_CHUNKS`) whose time is where their sequence number puts them: after a broker restart
    the live stream's newest chunks can overtake the ones the broker delivers again, and a chunk that
    merely claims a far sequence number (its time says otherwise) is a gap at once, as before; so is one far
    ahead when no partial window would be lost.  Either way at most ``reorder_chunks`` chunks wait.  When the
    buffer is full, or a gap stays open for :data:`~agent.reorder.REORDER_TIMEOUT_S` (:meth:`expire`), the
    gap is declared as above and the stream goes on.  ``reorder_chunks=0`` feeds every chunk as it comes.

    With ``snapshot=True`` the stream is a series of bursts (a snapshot sensor: e.g. 1 s every 20 min), and
    each burst gives exactly one window, its first ``window_s``, whatever ``hop_s`` says.  A burst starts
    with a chunk whose time is more than :data:`SNAPSHOT_GAP` x ``window_s`` after the previous chunk's end
    (chunks lost in a sequence gap counted in), with the windower's first chunk, or with input delivered
    again from a recent burst's first chunk (their sequence numbers are remembered); after any other break the
    rest of the burst is skipped.  The rest of a burst after its window is skipped, and a burst shorter than
    the window is discarded (reported as a :class:`StreamBreak` when the next burst starts).  No grid: a
    burst's window starts at its first sample.
    """

    def __init__(self, window_s: float, hop_s: float, reorder_chunks: int = DEFAULT_REORDER_CHUNKS,
                 snapshot: bool = False) -> None:
        self.window_s = window_s
        self.hop_s = hop_s
        self.snapshot = snapshot
        self.last_end_ns = 0  # where the newest chunk fed ends, in source time (snapshot mode: bursts)
        self.burst_seqs: collections.deque[int] = collections.deque(maxlen=64)  # recent bursts' first seq
        self.buffer: np.ndarray | None = None
        self.buffer_start_ns = 0
        self.next_seq: int | None = None
        self.rate = 0.0
        self.count = 0
        self.skip = 0  # samples still to skip when the hop is longer than the window
        self.fed = 0  # samples fed since the start, and samples the buffer has moved past (cut or discarded)
        self.passed = 0
        self.held: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()  # (end sample, ack)
        self.last_ns = 0  # time of the newest chunk fed
        self.parked: dict[str, Any] | None = None  # the state before a step back into older input
        self.resumed = 0  # parked windows continued after input delivered again
        self.reorder = ReorderBuffer(reorder_chunks)

    def feed(self, message: SensorMessage) -> tuple[list[Window], StreamBreak | None]:
        """Add a chunk; returns the completed windows and any break detected before them.

        A chunk ahead of a gap is held (no windows yet); one that fills a gap is fed with those held behind it.
        """
        values = round(self.window_s * message.sample_rate) * message.samples.shape[1]
        if values > MAX_WINDOW_VALUES:  # refused before anything is buffered
            raise RejectedInput(f"a {self.window_s} s window at {message.sample_rate} Hz x "
                                f"{message.samples.shape[1]} channels would hold {values} values, "
                                f"more than {MAX_WINDOW_VALUES}")
        windows: list[Window] = []
        breaks: list[StreamBreak] = []
        if self._holds(message):
            self.reorder.hold(message)
        else:
            while (lowest := self.reorder.lowest()) is not None and lowest < message.seq:
                self._take(self.reorder.take_lowest(), windows, breaks)  # far ahead: the held ones go first
                self._release(windows, breaks)
            self._take(message, windows, breaks)
        self._release(windows, breaks)
        while self.reorder.over():  # full: the lowest held chunk goes on without its gap filled
            self._take(self.reorder.take_lowest(), windows, breaks)
            self._release(windows, breaks)
        return windows, _merged(breaks)

    def expire(self, now: float | None = None) -> tuple[list[Window], StreamBreak | None, SensorMessage | None]:
        """Feed the held chunks, declaring their gaps, if the oldest waited too long; returns the windows cut,
        the breaks, and the last chunk fed (None when nothing had waited long enough)."""
        windows: list[Window] = []
        breaks: list[StreamBreak] = []
        last = None
        if self.reorder.expired(now):
            last = self.reorder.chunks[max(self.reorder.chunks)]  # all go, in order: this one last
            while self.reorder:
                self._take(self.reorder.take_lowest(), windows, breaks)
                self._release(windows, breaks)
        return windows, _merged(breaks), last

    def _holds(self, message: SensorMessage) -> bool:
        """Whether a chunk waits in the reorder buffer: close ahead of the stream's or a parked window's next."""
        if self.next_seq is None or not self.reorder.max_chunks:
            return False
        expected = [self.next_seq]
        # far ahead, a chunk waits only to save a partial window: holding it otherwise only delays its windows
        # (and a broker restored from an older save forgets input the agent has not acknowledged)
        partial = [(self.next_seq, self.last_ns)] if self.buffer is not None and len(self.buffer) else []
        if self.parked is not None:
            if message.seq == self.parked["next_seq"]:
                return False  # the parked window's own next chunk: it resumes now
            expected.append(self.parked["next_seq"])
            partial.append((self.parked["next_seq"], self.parked["last_ns"]))
        if self.reorder:  # held chunks start a window that the chunks after them complete
            newest = self.reorder.chunks[max(self.reorder.chunks)]
            partial.append((newest.seq + 1, newest.timestamp_ns))
        return (self.reorder.ahead(message.seq, expected)
                or any(_in_step(message, after, last_ns) for after, last_ns in partial))

    def _release(self, windows: list[Window], breaks: list[StreamBreak]) -> None:
        """Feed the held chunks that now come next, in sequence order."""
        while self.reorder and self.next_seq is not None:
            message = self.reorder.take(self.next_seq)
            if message is None and self.parked is not None:
                message = self.reorder.take(self.parked["next_seq"])
            if message is None:
                return
            self._take(message, windows, breaks)

    def _take(self, message: SensorMessage, windows: list[Window], breaks: list[StreamBreak]) -> None:
        cut, stream_break = self._feed(message)
        windows += cut
        if stream_break is not None:
            breaks.append(stream_break)

    def _feed(self, message: SensorMessage) -> tuple[list[Window], StreamBreak | None]:
        """Add one chunk, in the order given; returns the completed windows and any break detected before it."""
        chunk = message.samples.astype(np.float32, copy=False)
        if self.parked is not None:
            if message.seq == self.parked["next_seq"] and message.seq != self.next_seq:
                self._resume()  # back where the stream was: what came in between was input delivered again
            elif message.seq >= self.parked["next_seq"] or message.timestamp_ns > self.parked["last_ns"]:
                self._drop_parked()
        stream_break = self._check_continuity(message, chunk.shape[1])
        burst = self.snapshot and self._new_burst(message, stream_break)
        if burst and self.buffer is not None and (stream_break is None or stream_break.missing > 0):
            short = self._end_burst()  # (a step back to an earlier burst parks a partial window instead)
            stream_break = stream_break or short
        if stream_break is not None:
            if self._steps_back(message):
                self._park()
            else:
                self.passed = self.fed  # the discarded partial window is done with
            self.buffer = None
            self.skip = 0
        self.fed += len(chunk)
        self.last_ns = message.timestamp_ns
        self.last_end_ns = message.timestamp_ns + round(len(chunk) / message.sample_rate * 1e9)
        self.held.append((self.fed, message.ack))
        self.next_seq = message.seq + 1
        if self.buffer is None:
            self.rate = message.sample_rate
            self.buffer = chunk.copy()
            self.buffer_start_ns = message.timestamp_ns
            # snapshot mode: a window only from a burst's start, never from its middle after a break
            self.skip = (0 if burst else _REST_OF_BURST) if self.snapshot else self._to_grid(message.seq, len(chunk))
            if burst:
                self.burst_seqs.append(message.seq)
        else:
            if not len(self.buffer) and not self.skip:
                # nothing pending: time restarts from this chunk (snapshot streams jump between chunks)
                self.buffer_start_ns = message.timestamp_ns
                self.buffer = chunk  # decoded arrays are read-only, so windows may view them directly
            else:
                self.buffer = np.concatenate((self.buffer, chunk))
        if self.skip:
            dropped = min(self.skip, len(self.buffer))
            self._advance(dropped)
            if self.skip != _REST_OF_BURST:
                self.skip -= dropped
        return self._cut(message), stream_break

    def _check_continuity(self, message: SensorMessage, channels: int) -> StreamBreak | None:
        reason = None
        missing = 0
        if self.buffer is not None and message.sample_rate != self.rate:
            reason = f"sample rate changed from {self.rate} to {message.sample_rate} Hz"
        elif self.buffer is not None and channels != self.buffer.shape[1]:
            reason = f"channel count changed from {self.buffer.shape[1]} to {channels}"
        elif self.next_seq is not None and message.seq != self.next_seq:
            missing = message.seq - self.next_seq
            reason = (f"sequence gap: expected {self.next_seq}, got {message.seq}" if missing > 0
                      else f"sequence went back from {self.next_seq - 1} to {message.seq}")
        if reason is None:
            return None
        return StreamBreak(reason, max(missing, 0))

    def _steps_back(self, message: SensorMessage) -> bool:
        """Whether a break is a step back in sequence and time, same rate, with a partial window worth keeping."""
        return (self.buffer is not None and len(self.buffer) > 0 and self.next_seq is not None
                and message.seq < self.next_seq and message.timestamp_ns < self.last_ns
                and message.sample_rate == self.rate)

    def _new_burst(self, message: SensorMessage, stream_break: StreamBreak | None) -> bool:
        """Snapshot mode: whether this chunk starts a new burst (the first chunk, or silence before it, lost
        chunks counted in)."""
        if self.next_seq is None:
            return True
        if stream_break is not None and message.sample_rate != self.rate:
            return False  # a format change: a window only from the next burst
        if stream_break is not None and stream_break.missing <= 0:
            return message.seq in self.burst_seqs  # input delivered again: from a burst's start, or its middle
        lost_ns = (stream_break.missing if stream_break else 0) * len(message.samples) / message.sample_rate * 1e9
        return message.timestamp_ns - self.last_end_ns - lost_ns > SNAPSHOT_GAP * self.window_s * 1e9

    def _end_burst(self) -> StreamBreak | None:
        """Snapshot mode: the previous burst is done with; a break if it ended before its window was full."""
        assert self.buffer is not None  # only called with a burst in progress
        pending = len(self.buffer) if self.skip != _REST_OF_BURST else 0
        self.passed = self.fed
        self.buffer = None
        self.skip = 0
        if not pending:
            return None
        size = max(1, round(self.window_s * self.rate))
        return StreamBreak(f"snapshot of {pending} samples is shorter than the window ({size}); discarded")

    _STATE = ("buffer", "buffer_start_ns", "next_seq", "rate", "skip", "fed", "passed", "held", "last_ns",
              "last_end_ns")

    def _park(self) -> None:
        if self.parked is not None and self.parked["next_seq"] >= (self.next_seq or 0):
            self.passed = self.fed  # a step back within repeated input: the newer parked window is kept
            return
        self._drop_parked()
        self.parked = {name: getattr(self, name) for name in self._STATE}
        self.fed = self.passed = 0
        self.held = collections.deque()

    def _resume(self) -> None:
        assert self.parked is not None  # only called with a parked window
        self.discard_held()  # the repeated input: its windows were cut when it came the first time
        for name, value in self.parked.items():
            setattr(self, name, value)
        self.parked = None
        self.resumed += 1

    def _drop_parked(self) -> None:
        if self.parked is not None:
            for _, ack in self.parked["held"]:
                ack()
            self.parked = None

    def _to_grid(self, seq: int, chunk_length: int) -> int:
        """Samples from this chunk's start to the next window start on the stream's grid (chunk lengths are
        taken to be constant: a stream whose chunk length varies is aligned by its first chunk's length)."""
        hop = max(1, round(self.hop_s * self.rate))
        return (-seq * chunk_length) % hop

    def _cut(self, message: SensorMessage) -> list[Window]:
        assert self.buffer is not None  # set by feed() just before
        size = max(1, round(self.window_s * self.rate))
        hop = max(1, round(self.hop_s * self.rate))
        windows = []
        while len(self.buffer) >= size:
            windows.append(Window(message.sensor_id, message.kind, self.buffer[:size], self.rate,
                                  self.buffer_start_ns, self.count))
            self.count += 1
            if self.snapshot:  # one window per burst: the rest of it is passed over
                self.skip = _REST_OF_BURST
                self._advance(len(self.buffer))
                break
            self.skip = max(0, hop - len(self.buffer))
            self._advance(min(hop, len(self.buffer)))
        return windows

    def _advance(self, samples: int) -> None:
        assert self.buffer is not None  # only called with a buffer
        self.buffer = self.buffer[samples:]
        self.passed += samples
        self.buffer_start_ns += round(samples / self.rate * 1e9)

    def acknowledge(self) -> None:
        """Acknowledge the chunks the buffer has moved past (call once their windows' events are stored)."""
        while self.held and self.held[0][0] <= self.passed:
            self.held.popleft()[1]()

    def discard(self) -> None:
        """Acknowledge every held chunk: the windower is being dropped with its partial window (a reload,
        a failure on its input, the sensor forgotten), so nothing will ever cut those windows."""
        self.discard_held()
        self._drop_parked()
        self.reorder.discard()

    def discard_held(self) -> None:
        while self.held:
            self.held.popleft()[1]()


def _in_step(message: SensorMessage, after: int, last_ns: int) -> bool:
    """Whether a chunk at most :data:`FAR_AHEAD_CHUNKS` ahead of sequence number ``after`` (the chunk before it
    was at ``last_ns``) has the time its sequence number gives it, chunks of its length in between."""
    skipped = message.seq - after + 1  # chunk lengths from the last one fed to this one
    if not 1 < skipped <= FAR_AHEAD_CHUNKS + 1 or message.timestamp_ns <= last_ns:
        return False
    chunk_ns = len(message.samples) / message.sample_rate * 1e9
    expected_ns = skipped * chunk_ns
    return abs(message.timestamp_ns - last_ns - expected_ns) <= chunk_ns + IN_STEP_TOLERANCE * expected_ns


def _merged(breaks: list[StreamBreak]) -> StreamBreak | None:
    """One break for several chunks fed at once: the reasons joined, the missing chunks added up."""
    if len(breaks) <= 1:
        return breaks[0] if breaks else None
    return StreamBreak("; ".join(b.reason for b in breaks), sum(b.missing for b in breaks))

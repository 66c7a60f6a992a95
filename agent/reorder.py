"""A bounded per-sensor reorder buffer: chunks that arrive ahead of the next expected one wait for the gap to fill."""

from __future__ import annotations

import time
from collections.abc import Callable

from sensors.wire import SensorMessage

#: the default number of chunks a sensor may have waiting ahead of a gap (the task's ``reorder_chunks``)
DEFAULT_REORDER_CHUNKS = 8
#: a gap still open this long (wall clock) after the first chunk behind it arrived is declared
REORDER_TIMEOUT_S = 2.0
#: the most values (samples x channels) held ahead of a gap, per sensor: 16 MiB of float32
MAX_HELD_VALUES = 1 << 22


class ReorderBuffer:
    """Chunks of one sensor that arrived ahead of the next expected sequence number, held until it comes.

    A chunk is held only when it is at most ``max_chunks`` ahead of a sequence number the windower expects
    (the stream's next one, or a parked window's next one).  The buffer never holds more than ``max_chunks``
    chunks nor more than :data:`MAX_HELD_VALUES` values; past that, or once its oldest chunk has waited
    ``timeout_s``, the windower takes the lowest held chunk anyway and declares the gap.  Held chunks are not
    acknowledged: they are acknowledged like any other once fed and their windows cut (or on :meth:`discard`).
    """

    def __init__(self, max_chunks: int = DEFAULT_REORDER_CHUNKS, timeout_s: float = REORDER_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_chunks = max_chunks
        self.timeout_s = timeout_s
        self.clock = clock
        self.chunks: dict[int, SensorMessage] = {}
        self.values = 0
        self.since: float | None = None  # when the oldest chunk now held arrived
        self.released = 0  # chunks held, then fed in order once their gap filled
        self.declared = 0  # gaps declared because the buffer was full or a gap stayed open too long
        self.duplicates = 0  # chunks that arrived again while held (acknowledged, dropped)

    def __len__(self) -> int:
        return len(self.chunks)

    def ahead(self, seq: int, expected: list[int]) -> bool:
        """Whether a chunk is close enough ahead of an expected sequence number to wait for the gap to fill."""
        return any(0 < seq - after <= self.max_chunks for after in expected)

    def hold(self, message: SensorMessage) -> None:
        if message.seq in self.chunks:  # sent again while it waits: the first copy will be used
            self.duplicates += 1
            message.ack()
            return
        if not self.chunks:
            self.since = self.clock()
        self.chunks[message.seq] = message
        self.values += message.samples.size

    def over(self) -> bool:
        """Whether the buffer holds more than its bounds allow (the lowest chunk must go, its gap declared)."""
        return bool(self.chunks) and (len(self.chunks) > self.max_chunks or self.values > MAX_HELD_VALUES)

    def expired(self, now: float | None = None) -> bool:
        """Whether the oldest held chunk has waited longer than the timeout."""
        return self.since is not None and (self.clock() if now is None else now) - self.since >= self.timeout_s

    def take(self, seq: int) -> SensorMessage | None:
        """The held chunk with this sequence number, if any (its gap filled)."""
        message = self._pop(seq)
        if message is not None:
            self.released += 1
        return message

    def lowest(self) -> int | None:
        return min(self.chunks) if self.chunks else None

    def take_lowest(self) -> SensorMessage:
        """The lowest held chunk, taken although its gap is still open (the gap is declared)."""
        self.declared += 1
        message = self._pop(min(self.chunks))
        assert message is not None  # only called with chunks held
        if self.chunks:
            self.since = self.clock()  # the next gap's wait starts now
        return message

    def _pop(self, seq: int) -> SensorMessage | None:
        message = self.chunks.pop(seq, None)
        if message is not None:
            self.values -= message.samples.size
            if not self.chunks:
                self.since = None
        return message

    def discard(self) -> None:
        """Acknowledge every held chunk: the windower is dropped, nothing will use them."""
        chunks, self.chunks, self.values, self.since = self.chunks, {}, 0, None
        for message in chunks.values():
            message.ack()

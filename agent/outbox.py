"""The durable outbox: events wait in SQLite (WAL) until the broker acknowledged them.

Delivery is at least once and in order per topic.  Rows are handed out fairly
across topics (the first pending row of every topic, then the second, ...), topics
holding alarms first, so that a fresh alarm is never stuck behind a backlog.  Which
rows are in flight is kept in memory, never written: a reconnect (a new *epoch*)
makes every unacknowledged row pending again, and so does a restart.

Bounds: when the count or byte limit is exceeded, the oldest low-severity rows are
evicted first; alarms are never evicted (the outbox then runs over its limit and
says so).  Rows past their time-to-live expire, alarms excepted.

A full or failing disk loses nothing while the agent runs: a write that fails keeps
the event in a bounded memory spill that is still handed out for publishing, and is
retried on disk; an acknowledgement whose delete fails is remembered in memory (the
row is not handed out again) and the delete retried.  Both raise :attr:`Outbox.degraded`
until a write works again; a database that cannot even be opened is replaced by one in
memory until the next start.  At close, what is still only in memory is written to the
log, one JSON line per event, so that nothing vanishes without a trace.

Acknowledged events are kept in memory for ``replay_window_s``: a broker that crashes
loses what it acknowledged since its last autosave, so after an unexpected reconnect
the sink calls :meth:`Outbox.replay` to publish that window again (consumers drop
duplicates by event id).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import Field

from agent.events import SEVERITY_RANK
from sensors.settings import Strict

log = structlog.get_logger(__name__)
ALARM = SEVERITY_RANK["alarm"]
SPILL_LIMIT = 10_000
RETAIN_LIMIT = 20_000  # acknowledged events kept for replay at most, whatever the window...
RETAIN_BYTES = 32 << 20  # ...and their payload bytes (attachments are large)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    severity INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER,
    epoch INTEGER NOT NULL DEFAULT -1
);
CREATE INDEX IF NOT EXISTS outbox_topic ON outbox (topic, id);
"""
# (the epoch column is no longer used: it stays so that outboxes written by older releases open unchanged)

# First pending row of every topic, then the second, ...; topics with alarms first. The parameter is a JSON
# list of the rows to leave out (in flight, or acknowledged but not yet deleted).
FAIR_BATCH = """
SELECT id, event_id, topic, payload, severity FROM (
    SELECT id, event_id, topic, payload, severity,
           ROW_NUMBER() OVER (PARTITION BY topic ORDER BY id) AS position,
           MAX(severity) OVER (PARTITION BY topic) AS priority
    FROM outbox WHERE id NOT IN (SELECT value FROM json_each(?))
) ORDER BY position, priority DESC, id LIMIT ?
"""
Row = tuple[str, str, bytes, int, int, "int | None"]  # event_id, topic, payload, severity, created_ns, expires_ns


class OutboxConfig(Strict):
    """The durable outbox between the pipeline and the MQTT broker."""

    max_events: int = Field(default=100_000, ge=10, description="events held at most")
    max_mb: float = Field(default=256, gt=0, description="payload megabytes held at most")
    ttl_s: dict[str, float] = Field(
        default={"health": 3600, "status": 600, "image": 86_400},
        description="time-to-live per event type ('image' for attachments); alarms never expire",
    )
    replay_window_s: float = Field(
        default=60, ge=0, description="acknowledged events are published again after the broker restarts if "
        "they were acknowledged this long before it went away; longer than the broker's autosave_interval")


@dataclass(frozen=True)
class Entry:
    """One message waiting for delivery (a negative ``row_id`` is an event held only in memory)."""

    row_id: int
    event_id: str
    topic: str
    payload: bytes
    severity: int


@dataclass
class OutboxCounters:
    stored: int = 0
    delivered: int = 0
    evicted: int = 0
    expired: int = 0
    write_failures: int = 0
    over_limit: int = 0
    replayed: int = 0


class Outbox:
    """A bounded SQLite queue of outgoing messages, safe to use from several threads."""

    def __init__(self, path: Path, max_events: int = 100_000, max_bytes: int = 256 << 20,
                 replay_window_s: float = 0.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.replay_window_s = replay_window_s
        self.counters = OutboxCounters()
        #: the last storage error while the disk refuses writes; None when writes work
        self.degraded: str | None = None
        self.epoch = 0
        self._lock = threading.Lock()
        self._spill: dict[int, Entry] = {}  # events whose write failed, by (negative) memory id
        self._spill_rows: dict[int, Row] = {}
        self._memory_ids = itertools.count(-1, -1)
        self._flight: dict[int, tuple[int, Entry]] = {}  # handed out (epoch, entry), not yet acknowledged
        self._undeleted: dict[int, int] = {}  # acknowledged rows whose delete failed: row id -> payload size
        self._retained: collections.deque[tuple[float, Entry]] = collections.deque()  # (acknowledged at, entry)
        self._retained_bytes = 0
        self._replay: dict[int, Entry] = {}  # acknowledged entries to publish again, oldest first
        #: True when the database could not be opened (e.g. a start on a full disk) and lives in memory
        self.volatile = False
        try:
            self._db = _open(str(path))
        except sqlite3.Error as error:  # an agent that cannot store must still publish: never fail the start
            log.error("outbox cannot open its database; events are kept in memory until the next start",
                      path=str(path), error=str(error))
            self.degraded, self.volatile = str(error), True
            self._db = _open(":memory:")
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.count, self.bytes = int(count), int(size)

    # -- storing -------------------------------------------------------------------------------
    def put(self, event_id: str, topic: str, payload: bytes, severity: int, ttl_s: float | None = None,
            now_ns: int | None = None) -> None:
        """Store a message durably; never raises for a full disk (the message is kept in memory and retried)."""
        now_ns = now_ns or time.time_ns()
        expires = None if ttl_s is None or severity >= ALARM else now_ns + int(ttl_s * 1e9)
        row = (event_id, topic, payload, severity, now_ns, expires)
        with self._lock:
            self._retry()
            if self._spill or not self._insert(row):  # behind a spill, a row waits its turn (order per topic)
                self._spill_row(row)
            self._enforce_bounds()

    def _insert(self, row: Row) -> bool:
        try:
            self._db.execute(
                "INSERT INTO outbox (event_id, topic, payload, severity, created_ns, expires_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)", row)
        except sqlite3.Error as error:
            self._failed("outbox write failed; the event is kept in memory and still published", error,
                         topic=row[1])
            return False
        self._working()
        self.count += 1
        self.bytes += len(row[2])
        self.counters.stored += 1
        return True

    def _failed(self, message: str, error: sqlite3.Error, **fields: object) -> None:
        self.counters.write_failures += 1
        if self.degraded is None:
            log.error(message, error=str(error), **fields)
        self.degraded = str(error)

    def _working(self) -> None:
        if self.degraded is not None and not self.volatile:  # a database in memory is no recovery
            log.info("outbox writes work again", in_memory=len(self._spill))
            self.degraded = None

    def _spill_row(self, row: Row) -> None:
        if len(self._spill) >= SPILL_LIMIT:
            victim = min(self._spill.values(), key=lambda entry: (entry.severity, -entry.row_id))
            self._forget_spilled(victim.row_id)
            self.counters.evicted += 1
            log.error("outbox memory spill full; event dropped", topic=victim.topic, event_id=victim.event_id,
                      severity=victim.severity)
        memory_id = next(self._memory_ids)
        self._spill[memory_id] = Entry(memory_id, row[0], row[1], row[2], row[3])
        self._spill_rows[memory_id] = row

    def _forget_spilled(self, memory_id: int) -> None:
        self._spill.pop(memory_id, None)
        self._spill_rows.pop(memory_id, None)
        self._flight.pop(memory_id, None)

    def _retry(self) -> None:
        """Called under the lock: store what waits in memory and delete what was acknowledged, if the disk lets us."""
        self._retry_deletes()
        for memory_id in list(self._spill):
            if memory_id in self._flight:
                continue  # being published: stored if its acknowledgement does not come first
            if not self._insert(self._spill_rows[memory_id]):
                return
            self._forget_spilled(memory_id)

    def _retry_deletes(self) -> None:
        if not self._undeleted:
            return
        undeleted = self._undeleted
        try:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id in undeleted])
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            self._failed("outbox could not delete acknowledged rows; they are remembered in memory", error,
                         rows=len(undeleted))
            return
        self._working()
        self.count -= len(undeleted)
        self.bytes -= sum(undeleted.values())
        self._undeleted = {}

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already on a full disk
            self._db.execute("ROLLBACK")

    def _enforce_bounds(self) -> None:
        while self.count > self.max_events or self.bytes > self.max_bytes:
            rows = self._db.execute(
                "SELECT id, LENGTH(payload), event_id, topic FROM outbox WHERE severity < ? "
                "ORDER BY severity, id LIMIT 100", (ALARM,)).fetchall()
            rows = [row for row in rows if row[0] not in self._undeleted]
            if not rows:
                self.counters.over_limit += 1
                log.error("outbox over its limit with alarms only; alarms are kept",
                          count=self.count, bytes=self.bytes)
                return
            for row_id, size, event_id, topic in rows:
                if self.count <= self.max_events and self.bytes <= self.max_bytes:
                    break
                if not self._delete(row_id, size):
                    return
                self.counters.evicted += 1
                log.warning("outbox full; evicted oldest low-severity event", event_id=event_id, topic=topic)

    def _delete(self, row_id: int, size: int) -> bool:
        try:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        except sqlite3.Error as error:
            self._failed("outbox delete failed", error, row=row_id)
            return False
        self._flight.pop(row_id, None)
        self.count -= 1
        self.bytes -= size
        return True

    # -- handing out and acknowledging -----------------------------------------------------------
    def take(self, limit: int) -> list[Entry]:
        """Hand out up to ``limit`` pending messages and mark them in flight: replays first, then the disk's
        rows (fair across topics), then events held only in memory (of topics with nothing older on disk)."""
        with self._lock:
            self._retry()
            busy = {row_id for row_id, (epoch, _) in self._flight.items() if epoch == self.epoch}
            entries = [entry for row_id, entry in self._replay.items() if row_id not in busy][:limit]
            skip = json.dumps(sorted(busy | set(self._undeleted) | set(self._replay)))
            if len(entries) < limit:
                rows = self._db.execute(FAIR_BATCH, (skip, limit - len(entries))).fetchall()
                entries += [Entry(*row) for row in rows]
            if len(entries) < limit and self._spill:
                older = {topic for (topic,) in self._db.execute(
                    "SELECT DISTINCT topic FROM outbox WHERE id NOT IN (SELECT value FROM json_each(?))", (skip,))}
                entries += [entry for row_id, entry in self._spill.items()
                            if row_id not in busy and entry.topic not in older][:limit - len(entries)]
            for entry in entries:
                self._flight[entry.row_id] = (self.epoch, entry)
        return entries

    def acknowledge(self, row_ids: list[int]) -> None:
        """The broker acknowledged these rows: remove them (and keep them for the replay window)."""
        if not row_ids:
            return
        with self._lock:
            now = time.monotonic()
            for row_id in row_ids:
                held = self._flight.pop(row_id, None)
                if held is None:
                    continue  # a second acknowledgement of the same row
                entry = held[1]
                if self._replay.pop(row_id, None) is None:
                    self.counters.delivered += 1
                    if row_id < 0:
                        self._forget_spilled(row_id)
                    else:
                        self._undeleted[row_id] = len(entry.payload)
                self._retain(now, entry)
            self._retry_deletes()

    def _retain(self, now: float, entry: Entry) -> None:
        if self.replay_window_s <= 0:
            return
        retained = self._retained
        retained.append((now, entry))
        self._retained_bytes += len(entry.payload)
        while retained and (len(retained) > RETAIN_LIMIT or self._retained_bytes > RETAIN_BYTES
                            or now - retained[0][0] > self.replay_window_s):
            self._retained_bytes -= len(retained.popleft()[1].payload)

    def replay(self, since: float) -> int:
        """The broker may have lost what it acknowledged after ``since`` (a ``time.monotonic()`` value):
        hand those events out again, before anything else; returns how many."""
        with self._lock:
            again = [entry for acked_at, entry in self._retained if acked_at >= since]
            self._retained.clear()
            self._retained_bytes = 0
            for entry in again:
                self._replay[entry.row_id] = entry
            self.counters.replayed += len(again)
        if again:
            log.info("publishing acknowledged events again (the broker may have lost them)", count=len(again))
        return len(again)

    def release(self, row_ids: list[int]) -> None:
        """These rows were handed out but not sent: make them pending again now."""
        with self._lock:
            for row_id in row_ids:
                self._flight.pop(row_id, None)

    def new_epoch(self) -> None:
        """A new connection: everything unacknowledged is pending again."""
        with self._lock:
            self.epoch += 1

    def expire(self, now_ns: int | None = None) -> int:
        """Drop rows past their time-to-live (never alarms); returns how many."""
        now_ns = now_ns or time.time_ns()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, LENGTH(payload) FROM outbox WHERE expires_ns IS NOT NULL AND expires_ns < ?",
                (now_ns,)).fetchall()
            expired = 0
            for row_id, size in rows:
                if row_id not in self._undeleted and self._delete(row_id, size):
                    expired += 1
            self.counters.expired += expired
        if expired:
            log.info("outbox entries expired", count=expired)
        return expired

    def pending(self) -> int:
        """Messages not yet acknowledged (including those held in memory) and replays not yet sent again."""
        return self.count - len(self._undeleted) + len(self._spill) + len(self._replay)

    def in_memory(self) -> int:
        """Events whose write failed and that live only in memory until stored or delivered."""
        return len(self._spill)

    def close(self) -> None:
        """Store what can be stored; what cannot goes to the log, one JSON line per event."""
        with self._lock:
            self._flight.clear()  # the connection is gone: nothing is in flight any more
            self._retry()
            left = list(self._spill.values())
            if self.volatile:  # the whole database lived in memory
                left = [Entry(*row) for row in self._db.execute(FAIR_BATCH, ("[]", -1))] + left
            if left:
                log.error("outbox closing with events only in memory; each is logged", count=len(left))
            for entry in left:
                log.error("undelivered event", topic=entry.topic, event_id=entry.event_id, **_readable(entry.payload))
            if self._undeleted:
                log.warning("acknowledged rows could not be deleted; they are published again at the next start",
                            count=len(self._undeleted))
            self._db.close()


def _open(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process crashes
        db.executescript(SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


def _readable(payload: bytes) -> dict[str, object]:
    """A payload for a log line: an event as its JSON object, anything else (an image) as base64."""
    try:
        return {"data": json.loads(payload)}
    except ValueError:
        return {"data_base64": base64.b64encode(payload).decode()}

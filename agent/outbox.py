"""The durable outbox: events wait in SQLite (WAL) until the broker acknowledged them.

Delivery is at least once and in order per topic.  Rows are handed out fairly
across topics (the first pending row of every topic, then the second, ...), topics
holding alarms first, so that a fresh alarm is never stuck behind a backlog.  A
row handed out is marked with the current connection *epoch*; a reconnect starts
a new epoch, so every unacknowledged row is handed out again.

Bounds: when the count or byte limit is exceeded, the oldest low-severity rows are
evicted first; alarms are never evicted (the outbox then runs over its limit and
says so).  Rows past their time-to-live expire, alarms excepted.  A write that
fails (disk full, I/O error) is kept in a bounded memory spill and retried, and
every eviction, expiry and failure is counted.
"""

from __future__ import annotations

import collections
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

# First pending row of every topic, then the second, ...; topics with alarms first.
FAIR_BATCH = """
SELECT id, event_id, topic, payload, severity FROM (
    SELECT id, event_id, topic, payload, severity,
           ROW_NUMBER() OVER (PARTITION BY topic ORDER BY id) AS position,
           MAX(severity) OVER (PARTITION BY topic) AS priority
    FROM outbox WHERE epoch < ?
) ORDER BY position, priority DESC, id LIMIT ?
"""


class OutboxConfig(Strict):
    """The durable outbox between the pipeline and the MQTT broker."""

    max_events: int = Field(default=100_000, ge=10, description="events held at most")
    max_mb: float = Field(default=256, gt=0, description="payload megabytes held at most")
    ttl_s: dict[str, float] = Field(
        default={"health": 3600, "status": 600, "image": 86_400},
        description="time-to-live per event type ('image' for attachments); alarms never expire",
    )


@dataclass(frozen=True)
class Entry:
    """One message waiting for delivery."""

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


class Outbox:
    """A bounded SQLite queue of outgoing messages, safe to use from several threads."""

    def __init__(self, path: Path, max_events: int = 100_000, max_bytes: int = 256 << 20) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.counters = OutboxCounters()
        self._lock = threading.Lock()
        self._spill: collections.deque[tuple[str, str, bytes, int, int, int | None]] = collections.deque()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process crashes
        self._db.executescript(SCHEMA)
        self._db.execute("UPDATE outbox SET epoch = -1")  # nothing is in flight after a restart
        self.epoch = 0
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self.count, self.bytes = int(count), int(size)

    def put(self, event_id: str, topic: str, payload: bytes, severity: int, ttl_s: float | None = None,
            now_ns: int | None = None) -> None:
        """Store a message durably; never raises for a full disk (the message is spilled and retried)."""
        now_ns = now_ns or time.time_ns()
        expires = None if ttl_s is None or severity >= ALARM else now_ns + int(ttl_s * 1e9)
        row = (event_id, topic, payload, severity, now_ns, expires)
        with self._lock:
            if self._spill:
                self._retry_spill()
            if not self._insert(row):
                self._spill_row(row)
            self._enforce_bounds()

    def _insert(self, row: tuple[str, str, bytes, int, int, int | None]) -> bool:
        try:
            self._db.execute(
                "INSERT INTO outbox (event_id, topic, payload, severity, created_ns, expires_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)", row)
        except sqlite3.Error as error:
            self.counters.write_failures += 1
            log.error("outbox write failed; keeping the event in memory", error=str(error), topic=row[1])
            return False
        self.count += 1
        self.bytes += len(row[2])
        self.counters.stored += 1
        return True

    def _spill_row(self, row: tuple[str, str, bytes, int, int, int | None]) -> None:
        if len(self._spill) >= SPILL_LIMIT:
            victim = min(range(len(self._spill)), key=lambda i: (self._spill[i][3], i))
            dropped = self._spill[victim]
            del self._spill[victim]
            self.counters.evicted += 1
            log.error("outbox memory spill full; event dropped", topic=dropped[1], event_id=dropped[0],
                      severity=dropped[3])
        self._spill.append(row)

    def _retry_spill(self) -> None:
        while self._spill and self._insert(self._spill[0]):
            self._spill.popleft()

    def _enforce_bounds(self) -> None:
        while self.count > self.max_events or self.bytes > self.max_bytes:
            rows = self._db.execute(
                "SELECT id, LENGTH(payload), event_id, topic FROM outbox WHERE severity < ? "
                "ORDER BY severity, id LIMIT 100", (ALARM,)).fetchall()
            if not rows:
                self.counters.over_limit += 1
                log.error("outbox over its limit with alarms only; alarms are kept",
                          count=self.count, bytes=self.bytes)
                return
            for row_id, size, event_id, topic in rows:
                if self.count <= self.max_events and self.bytes <= self.max_bytes:
                    break
                self._delete(row_id, size)
                self.counters.evicted += 1
                log.warning("outbox full; evicted oldest low-severity event", event_id=event_id, topic=topic)

    def _delete(self, row_id: int, size: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        self.count -= 1
        self.bytes -= size

    def take(self, limit: int) -> list[Entry]:
        """Hand out up to ``limit`` pending messages (fair across topics) and mark them in flight."""
        with self._lock:
            if self._spill:
                self._retry_spill()
            rows = self._db.execute(FAIR_BATCH, (self.epoch, limit)).fetchall()
            if rows:
                self._db.executemany("UPDATE outbox SET epoch = ? WHERE id = ?",
                                     [(self.epoch, row[0]) for row in rows])
        return [Entry(*row) for row in rows]

    def acknowledge(self, row_ids: list[int]) -> None:
        """The broker acknowledged these rows: remove them."""
        if not row_ids:
            return
        with self._lock:
            sizes = self._db.execute(
                f"SELECT id, LENGTH(payload) FROM outbox WHERE id IN ({','.join('?' * len(row_ids))})",
                row_ids).fetchall()
            self._db.execute("BEGIN")
            for row_id, size in sizes:
                self._delete(row_id, size)
            self._db.execute("COMMIT")
            self.counters.delivered += len(sizes)

    def release(self, row_ids: list[int]) -> None:
        """These rows were handed out but not sent: make them pending again now."""
        with self._lock:
            self._db.executemany("UPDATE outbox SET epoch = -1 WHERE id = ?", [(row_id,) for row_id in row_ids])

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
            for row_id, size in rows:
                self._delete(row_id, size)
            self.counters.expired += len(rows)
        if rows:
            log.info("outbox entries expired", count=len(rows))
        return len(rows)

    def pending(self) -> int:
        """Messages not yet acknowledged, including any held in memory."""
        return self.count + len(self._spill)

    def close(self) -> None:
        with self._lock:
            self._retry_spill()
            if self._spill:
                log.error("outbox closing with events only in memory", count=len(self._spill))
            self._db.close()

"""The durable outbox: ordering, fairness, bounds, expiry, redelivery after reconnects and restarts."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbox import ALARM, Outbox

INFO, WARNING = 0, 1


def fill(outbox: Outbox, topic: str, count: int, severity: int = INFO, start: int = 0) -> None:
    for index in range(start, start + count):
        outbox.put(f"{topic}-{index}", topic, f"{topic}:{index}".encode(), severity)


class TestOrderAndFairness:
    def test_per_topic_order_is_kept(self, tmp_path: Path) -> None:
        """Rows of one topic are handed out oldest first."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "a", 5)
        assert [e.payload for e in outbox.take(10)] == [f"a:{i}".encode() for i in range(5)]

    def test_backlog_does_not_block_a_fresh_alarm(self, tmp_path: Path) -> None:
        """A fresh alarm on its own topic comes out first even behind a long backlog."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "health", 500)
        outbox.put("alarm-1", "alarms", b"alarm", ALARM)
        assert outbox.take(1)[0].event_id == "alarm-1"

    def test_topics_are_interleaved(self, tmp_path: Path) -> None:
        """A live topic drains beside a backlogged one instead of after it."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "old", 100)
        fill(outbox, "live", 2)
        topics = [e.topic for e in outbox.take(4)]
        assert sorted(topics) == ["live", "live", "old", "old"]


class TestDelivery:
    def test_acknowledged_rows_leave_and_unacknowledged_come_back_after_reconnect(self, tmp_path: Path) -> None:
        """Only acknowledged rows are removed; a new epoch hands out the rest again."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "a", 4)
        first = outbox.take(4)
        assert outbox.take(4) == []
        outbox.acknowledge([first[0].row_id, first[1].row_id])
        outbox.new_epoch()
        assert [e.event_id for e in outbox.take(10)] == ["a-2", "a-3"]
        assert outbox.counters.delivered == 2

    def test_rows_survive_a_restart(self, tmp_path: Path) -> None:
        """Everything not acknowledged is still there when the outbox is reopened."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "a", 3)
        outbox.take(3)
        outbox.close()
        reopened = Outbox(tmp_path / "o.sqlite")
        assert reopened.pending() == 3
        assert [e.event_id for e in reopened.take(10)] == ["a-0", "a-1", "a-2"]

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=40))
    def test_nothing_is_lost_whatever_is_acknowledged(self, plan: list[tuple[str, bool]]) -> None:
        """Across random acks and reconnects, every row is eventually acknowledged; nothing is lost."""
        outbox = Outbox(Path(tempfile.mkdtemp()) / "o.sqlite")
        for index, (topic, _) in enumerate(plan):
            outbox.put(f"{topic}{index}", topic, str(index).encode(), INFO)
        delivered: dict[str, list[int]] = {}
        acks = iter([ack for _, ack in plan] * 50)
        while outbox.pending():
            batch = outbox.take(3)
            keep = [e for e in batch if next(acks, True)]
            for entry in keep:
                delivered.setdefault(entry.topic, []).append(int(entry.payload))
            outbox.acknowledge([e.row_id for e in keep])
            if len(keep) < len(batch):
                outbox.new_epoch()  # a lost ack: the connection dropped
        expected: dict[str, list[int]] = {}
        for index, (topic, _) in enumerate(plan):
            expected.setdefault(topic, []).append(index)
        assert {topic: sorted(set(values)) for topic, values in delivered.items()} == expected
        outbox.close()


class TestBounds:
    def test_oldest_low_severity_is_evicted_first_and_alarms_never(self, tmp_path: Path) -> None:
        """When full, info goes before warnings, and alarms are kept even over the limit."""
        outbox = Outbox(tmp_path / "o.sqlite", max_events=5)
        outbox.put("alarm", "x", b"a", ALARM)
        fill(outbox, "warn", 2, WARNING)
        fill(outbox, "info", 4, INFO)
        remaining = {e.event_id for e in outbox.take(10)}
        assert "alarm" in remaining and {"warn-0", "warn-1"} <= remaining
        assert outbox.counters.evicted == 2 and outbox.count == 5

    def test_alarms_only_run_over_the_limit_loudly(self, tmp_path: Path) -> None:
        """An outbox full of alarms keeps them all and counts that it is over its limit."""
        outbox = Outbox(tmp_path / "o.sqlite", max_events=10)
        fill(outbox, "alarms", 12, ALARM)
        assert outbox.pending() == 12 and outbox.counters.over_limit >= 1

    def test_byte_bound(self, tmp_path: Path) -> None:
        """The byte limit evicts like the count limit."""
        outbox = Outbox(tmp_path / "o.sqlite", max_bytes=1000)
        for index in range(20):
            outbox.put(f"e{index}", "t", b"x" * 100, INFO)
        assert outbox.bytes <= 1000 and outbox.counters.evicted == 10

    def test_expired_rows_go_but_alarms_stay(self, tmp_path: Path) -> None:
        """Time-to-live drops stale low-value rows; alarms never expire."""
        outbox = Outbox(tmp_path / "o.sqlite")
        outbox.put("health", "h", b"h", INFO, ttl_s=60, now_ns=1)
        outbox.put("alarm", "a", b"a", ALARM, ttl_s=60, now_ns=1)
        assert outbox.expire(now_ns=61 * 10**9 + 2) == 1
        assert [e.event_id for e in outbox.take(10)] == ["alarm"]


class TestReplay:
    def test_acknowledged_events_of_the_window_are_handed_out_again_first(self, tmp_path: Path) -> None:
        """After replay(since), what was acknowledged since then comes out again, in order, before pending
        rows; acknowledging a replay does not count it delivered twice."""
        outbox = Outbox(tmp_path / "o.sqlite", replay_window_s=60)
        fill(outbox, "a", 3)
        early = outbox.take(1)
        outbox.acknowledge([early[0].row_id])
        since = time.monotonic()
        late = outbox.take(1)
        outbox.acknowledge([late[0].row_id])
        assert outbox.replay(since) == 1
        assert outbox.pending() == 2
        again = outbox.take(10)
        assert [entry.event_id for entry in again] == ["a-1", "a-2"]
        outbox.acknowledge([entry.row_id for entry in again])
        assert outbox.pending() == 0 and outbox.counters.delivered == 3 and outbox.counters.replayed == 1

    def test_nothing_is_kept_without_a_window_or_past_it(self, tmp_path: Path) -> None:
        """replay_window_s = 0 keeps nothing; a window only keeps what was acknowledged within it."""
        outbox = Outbox(tmp_path / "o.sqlite")
        fill(outbox, "a", 2)
        outbox.acknowledge([entry.row_id for entry in outbox.take(2)])
        assert outbox.replay(0.0) == 0
        windowed = Outbox(tmp_path / "w.sqlite", replay_window_s=0.05)
        fill(windowed, "a", 2)
        windowed.acknowledge([windowed.take(1)[0].row_id])
        time.sleep(0.1)  # the window is a duration: nothing to wait for but time itself
        windowed.acknowledge([windowed.take(1)[0].row_id])
        assert windowed.replay(0.0) == 1
        outbox.close()
        windowed.close()


class TestFailures:
    def test_write_failure_is_spilled_and_retried(self, tmp_path: Path) -> None:
        """A failing disk does not raise: the event waits in memory and is stored once writes work again."""
        outbox = Outbox(tmp_path / "o.sqlite")
        outbox._db.execute("PRAGMA max_page_count = 1")
        payload = b"y" * 20_000
        outbox.put("big", "t", payload, ALARM)
        assert outbox.counters.write_failures >= 1 and outbox.pending() == 1
        handed = outbox.take(5)
        assert [e.event_id for e in handed] == ["big"]  # still published while only in memory
        outbox.release([entry.row_id for entry in handed])
        outbox._db.execute("PRAGMA max_page_count = 1073741823")
        assert [e.event_id for e in outbox.take(5)] == ["big"]
        assert outbox.in_memory() == 0 and outbox.count == 1

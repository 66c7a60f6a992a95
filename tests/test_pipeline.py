"""Windowing, the overload policy, gap and rejection accounting in the pipeline."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import structlog
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import pipeline
from agent.events import EventDraft
from agent.pipeline import BoundedQueue, Dispatcher, RejectionReporter
from agent.stats import Stats
from agent.tasks.base import RejectedInput
from agent.windowing import FAR_AHEAD_CHUNKS, Windower
from sensors.wire import Kind, SensorMessage, encode
from tests.conftest import vibration_chunk


def chunk(seq: int, samples: int = 100, rate: float = 1000.0, channels: int = 1) -> SensorMessage:
    data = np.arange(seq * samples, (seq + 1) * samples, dtype=np.float32)[:, None].repeat(channels, 1)
    return SensorMessage("s1", Kind.VIBRATION, seq, 10**18 + seq * samples * 10**6, data, rate)


class TestWindower:
    def test_windows_and_hops_cover_the_stream_contiguously(self) -> None:
        """0.5 s windows every 0.25 s over 1 s of 1 kHz data start every 250 samples and hold 500."""
        windower = Windower(0.5, 0.25)
        windows = [w for seq in range(10) for w in windower.feed(chunk(seq))[0]]
        assert [int(w.samples[0, 0]) for w in windows] == [0, 250, 500]
        assert all(len(w.samples) == 500 for w in windows)
        assert windows[1].start_ns - windows[0].start_ns == 250 * 10**6

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(1, 300), min_size=1, max_size=30), st.integers(50, 400), st.integers(10, 400))
    def test_any_chunking_gives_the_same_windows(self, sizes: list[int], window: int, hop: int) -> None:
        """Windows depend on the samples only, not on how the sensor cut them into chunks."""
        signal = np.arange(sum(sizes), dtype=np.float32)[:, None]
        windower = Windower(window / 1000, hop / 1000)
        got, start = [], 0
        for seq, size in enumerate(sizes):
            message = SensorMessage("s", Kind.VIBRATION, seq, 1, signal[start:start + size], 1000.0)
            start += size
            got += [int(w.samples[0, 0]) for w in windower.feed(message)[0]]
        expected = list(range(0, max(0, len(signal) - window) + 1, hop)) if len(signal) >= window else []
        assert got == expected

    def test_sequence_gap_restarts_the_window(self) -> None:
        """A missing chunk is reported and no window spans the hole (at once when no chunk is held for
        reordering; TestReordering shows the gap declared once the reorder buffer gives up)."""
        windower = Windower(0.2, 0.2, reorder_chunks=0)
        windower.feed(chunk(0))
        windows, stream_break = windower.feed(chunk(2))
        assert stream_break is not None and stream_break.missing == 1 and "gap" in stream_break.reason
        assert windows == []
        windows, _ = windower.feed(chunk(3))
        assert int(windows[0].samples[0, 0]) == 200

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 40), st.integers(0, 20), st.sampled_from([(0.4, 0.4), (0.4, 0.2), (0.3, 0.5)]),
           st.booleans())
    def test_redelivered_input_cuts_the_windows_of_an_uninterrupted_run(
            self, fault_at: int, back: int, shape: tuple[float, float], restarted: bool) -> None:
        """After a reconnect the broker delivers again every chunk not yet acknowledged, and maybe some before
        (the sequence steps back); after an agent restart a new windower starts with whichever of those comes
        first. Either way the windows cut are those of a run without the fault, at the same source times."""
        acked: set[int] = set()

        def starts(windower: Windower, seqs: range) -> set[int]:
            found = set()
            for seq in seqs:
                message = dataclasses.replace(chunk(seq), ack=functools.partial(acked.add, seq))
                found |= {w.start_ns for w in windower.feed(message)[0]}
                windower.acknowledge()
            return found

        reference = starts(Windower(*shape), range(60))
        acked.clear()
        windower = Windower(*shape)
        before = starts(windower, range(fault_at))
        first_unacked = min(set(range(fault_at)) - acked, default=fault_at)
        after = starts(Windower(*shape) if restarted else windower, range(max(0, first_unacked - back), 60))
        assert before | after == reference

    def test_sample_rate_change_restarts_the_stream(self) -> None:
        """A new sample rate mid-stream is reported and the old samples are not mixed in."""
        windower = Windower(0.1, 0.1)
        windower.feed(chunk(0, samples=50))
        windows, stream_break = windower.feed(chunk(1, samples=100, rate=2000.0))
        assert stream_break is not None and "sample rate changed" in stream_break.reason
        assert len(windows) == 0 and windower.rate == 2000.0


def starts_of(windower: Windower, seqs: list[int]) -> tuple[list[int], list[str]]:
    """The first sample of every window cut from these chunks in this order, and the breaks reported."""
    firsts, breaks = [], []
    for seq in seqs:
        windows, stream_break = windower.feed(chunk(seq))
        firsts += [int(w.samples[0, 0]) for w in windows]
        breaks += [stream_break.reason] if stream_break is not None else []
    return firsts, breaks


class TestReordering:
    def test_a_chunk_ahead_of_a_gap_waits_for_it(self) -> None:
        """Chunk 3 before chunk 2: it is held, and both are fed in order when 2 comes; no gap, same windows."""
        assert starts_of(Windower(0.2, 0.2), [0, 1, 3, 2, 4, 5]) == ([0, 200, 400], [])
        windower = Windower(0.2, 0.2)
        assert windower.feed(chunk(0))[0] == [] and windower.feed(chunk(2)) == ([], None)
        assert len(windower.reorder) == 1
        windows, stream_break = windower.feed(chunk(1))
        assert [int(w.samples[0, 0]) for w in windows] == [0] and stream_break is None
        assert windower.reorder.released == 1 and not windower.reorder

    def test_a_gap_never_filled_is_declared_when_the_buffer_is_full(self) -> None:
        """With two chunks held behind a gap the third goes over the bound: the gap is declared (as without
        reordering) and the stream goes on with the held chunks, in order."""
        windower = Windower(0.2, 0.2, reorder_chunks=2)
        windower.feed(chunk(0))
        assert windower.feed(chunk(2)) == ([], None) and windower.feed(chunk(3)) == ([], None)
        windows, stream_break = windower.feed(chunk(4))
        assert stream_break is not None and stream_break.missing == 1 and "gap" in stream_break.reason
        assert [int(w.samples[0, 0]) for w in windows] == [200] and windower.reorder.declared == 1
        assert not windower.reorder and windower.next_seq == 5

    def test_a_chunk_far_ahead_out_of_step_is_a_gap_at_once(self) -> None:
        """A jump beyond the bound whose time is not where its sequence number puts it (a publisher that
        skipped numbers, or junk) is not held; chunks held before it are fed first, in order."""
        windower = Windower(0.2, 0.2, reorder_chunks=3)
        starts_of(windower, [0, 2])
        windows, stream_break = windower.feed(dataclasses.replace(chunk(10), timestamp_ns=chunk(3).timestamp_ns))
        assert [int(w.samples[0, 0]) for w in windows] == [] and stream_break is not None
        assert "expected 1, got 2" in stream_break.reason and "expected 3, got 10" in stream_break.reason
        assert not windower.reorder
        assert starts_of(windower, [11]) == ([1000], [])
        assert not windower.reorder.ahead(10, [1]) and not windower.feed(chunk(12 + FAR_AHEAD_CHUNKS + 1))[0]
        assert not windower.reorder  # beyond the far bound: a gap at once, whatever its time

    def test_live_input_far_ahead_waits(self) -> None:
        """The soak's last broker_kill losses: after a broker restart the live stream's next chunks (the next
        window's, 13 ahead, their times in step) overtook the ones delivered again, and the gap was declared
        before chunks 6 and 7 came. Now chunk 19 waits, window [4, 8) is cut, then 19 goes on (a real gap)."""
        windower = Windower(0.4, 0.4, reorder_chunks=3)
        assert starts_of(windower, [0, 1, 2, 3, 4, 5, 19, 6, 7]) == ([0, 400], [])
        assert len(windower.reorder) == 1
        windows, stream_break, last = windower.expire(math.inf)
        assert windows == [] and stream_break is not None and stream_break.missing == 11
        assert last is not None and last.seq == 19

    def test_input_far_ahead_goes_on_at_once_when_no_partial_window_waits(self) -> None:
        """The 1,000-round soak with every in-step chunk far ahead held: a round's chunks waited behind the gap
        the sensor left before it, unacknowledged, a broker restored from an older save forgot them and the
        agent was killed before the gap was declared. With no partial window to save, they go on at once."""
        windower = Windower(0.4, 0.4, reorder_chunks=3)
        assert starts_of(windower, [0, 1, 2, 3]) == ([0], [])
        windows, stream_break = windower.feed(chunk(8))
        assert windows == [] and stream_break is not None and stream_break.missing == 4 and not windower.reorder

    def test_live_input_far_ahead_of_a_held_chunk_waits(self) -> None:
        """The soak's round 832: chunk 8 waits behind the sensor's own gap (4-7), a broker restored from an older
        save delivers chunk 1 again, then chunk 19 overtakes 9-18. Chunk 19 waits too (in step with 8), so
        chunks 9-18 complete windows [8, 12), [12, 16) and 19 completes [16, 20)."""
        windower = Windower(0.4, 0.4, reorder_chunks=4)
        firsts, _ = starts_of(windower, [0, 1, 2, 3, 8, 1, 19, *range(9, 19)])
        assert firsts[-3:] == [800, 1200, 1600]

    def test_live_input_far_ahead_waits_behind_a_stale_chunk(self) -> None:
        """As above with a stale chunk (sent long ago, delivered again by a broker restored from an older save)
        in between: it parks window [4, 8), chunk 19 waits for the parked window, chunk 6 resumes it."""
        windower = Windower(0.4, 0.4, reorder_chunks=3)
        firsts, _ = starts_of(windower, [0, 1, 2, 3, 4, 5, 1, 19, 6, 7])
        assert firsts == [0, 400] and windower.resumed == 1 and len(windower.reorder) == 1
        assert starts_of(Windower(0.2, 0.2, reorder_chunks=0), [0, 2, 1]) == (
            [], ["sequence gap: expected 1, got 2", "sequence went back from 2 to 1"])

    def test_a_gap_left_open_too_long_is_declared(self) -> None:
        """A held chunk whose gap stays open past the timeout is fed on expire(), the gap declared."""
        acked: list[int] = []
        windower = Windower(0.2, 0.2)
        for seq in (0, 2, 3):
            windower.feed(dataclasses.replace(chunk(seq), ack=functools.partial(acked.append, seq)))
        since = windower.reorder.since
        assert since is not None and windower.expire(since + 0.5) == ([], None, None)
        windows, stream_break, last = windower.expire(since + 60)
        assert [int(w.samples[0, 0]) for w in windows] == [200] and stream_break is not None
        assert stream_break.missing == 1 and last is not None and last.seq == 3
        windower.acknowledge()
        assert acked == [0, 2, 3] and not windower.reorder

    def test_held_chunks_are_acknowledged_only_once_used(self) -> None:
        """A chunk held for reordering is not acknowledged; a copy of it sent again is (dropped); discarding the
        windower acknowledges what it still holds."""
        acked: list[int] = []
        windower = Windower(0.2, 0.2)
        message = dataclasses.replace(chunk(0), ack=functools.partial(acked.append, 0))
        windower.feed(message)
        for copy in range(2):
            windower.feed(dataclasses.replace(chunk(2), ack=functools.partial(acked.append, 20 + copy)))
            windower.acknowledge()
        assert acked == [21] and windower.reorder.duplicates == 1
        windower.discard()
        assert sorted(acked) == [0, 20, 21]

    def test_a_parked_window_survives_a_later_chunk_sent_first(self) -> None:
        """The soak's broker_kill loss: window [4, 8) holds chunk 4 when a broker restored from an older save
        sends 0-2 again (the window is parked); then the sensors' client sends 6 again before 5. Chunk 6 waits,
        chunk 5 resumes the parked window, and window [4, 8) is cut with chunk 7."""
        windower = Windower(0.4, 0.4)
        firsts, _ = starts_of(windower, [0, 1, 2, 3, 4, 0, 1, 2, 6, 5, 7])
        assert firsts == [0, 400] and windower.resumed == 1

    @settings(max_examples=100, deadline=None)
    @given(st.integers(1, 8), st.lists(st.integers(1, 9), min_size=1, max_size=12), st.randoms(use_true_random=False),
           st.sampled_from([(0.4, 0.4), (0.4, 0.2), (0.3, 0.5)]))
    def test_any_order_within_the_bound_cuts_the_windows_of_in_order_delivery(
            self, bound: int, blocks: list[int], rng: random.Random, shape: tuple[float, float]) -> None:
        """Chunks shuffled within blocks of at most bound + 1 (so never more than bound held, nor any more
        than bound ahead) give the windows of in-order delivery, no break, and every chunk acknowledged."""
        order = [0]  # the first chunk starts the stream
        for size in blocks:
            block = list(range(len(order), len(order) + min(size, bound + 1)))
            rng.shuffle(block)
            order += block
        acked: list[int] = []
        windower = Windower(*shape, reorder_chunks=bound)
        got: list[tuple[int, int]] = []
        for seq in order:
            windows, stream_break = windower.feed(dataclasses.replace(chunk(seq), ack=functools.partial(acked.append,
                                                                                                         seq)))
            windower.acknowledge()
            assert stream_break is None
            got += [(w.start_ns, int(w.samples[0, 0])) for w in windows]
        reference = Windower(*shape)
        expected = [(w.start_ns, int(w.samples[0, 0])) for seq in sorted(order) for w in reference.feed(chunk(seq))[0]]
        assert got == expected and not windower.reorder
        windower.discard()
        assert sorted(acked) == sorted(order)


class TestOverloadPolicy:
    def test_bounded_queue_evicts_oldest(self) -> None:
        """A full queue keeps the newest items and hands back the evicted oldest."""
        queue = BoundedQueue(2)
        first, second, third = chunk(0), chunk(1), chunk(2)
        assert queue.put(first) is None and queue.put(second) is None
        assert queue.put(third) is first
        assert [queue.get(0.1), queue.get(0.1)] == [second, third]

    def test_waiting_put_blocks_until_room(self) -> None:
        """A recording source waits for room instead of evicting."""
        import threading

        queue = BoundedQueue(1)
        queue.put(chunk(0))
        done = threading.Event()
        def put_then_signal() -> None:
            queue.put(chunk(1), wait=math.inf)
            done.set()

        threading.Thread(target=put_then_signal, daemon=True).start()
        assert not done.wait(0.3)
        assert queue.get(0.1) is not None
        assert done.wait(2)


    def test_a_bounded_wait_evicts_when_no_room_comes(self) -> None:
        """A put that waits a bounded time on a full queue evicts the oldest once the time is up."""
        queue = BoundedQueue(1)
        first = chunk(0)
        queue.put(first)
        started = time.monotonic()
        assert queue.put(chunk(1), wait=0.2) is first
        assert time.monotonic() - started >= 0.2


class TestDispatcher:
    def make(self) -> tuple[Dispatcher, Stats, list[tuple[str, EventDraft]]]:
        stats, emitted = Stats(), []
        reporter = RejectionReporter(lambda task, draft: emitted.append((task, draft)), interval_s=60)
        return Dispatcher(stats, 1 << 20, reporter), stats, emitted

    def test_gaps_and_missing_counts_per_sensor(self) -> None:
        """Sequence jumps are counted per sensor with the number of missing messages."""
        dispatcher, stats, _ = self.make()
        for seq in (0, 1, 5, 6):
            dispatcher.submit(encode(vibration_chunk("a", seq, 1.0, samples=10)))
        dispatcher.submit(encode(vibration_chunk("b", 0, 1.0, samples=10)))
        snapshot = stats.snapshot()["sensors"]
        assert snapshot["a"]["gaps"] == 1 and snapshot["a"]["missing"] == 3 and snapshot["a"]["received"] == 4
        assert snapshot["b"]["gaps"] == 0

    def test_rejections_are_counted_and_reported_at_a_limited_rate(self) -> None:
        """Every bad message is counted; the error topic gets one report per interval with the count."""
        dispatcher, stats, emitted = self.make()
        for _ in range(5):
            dispatcher.submit(b"\x00" * 60)
        assert stats.snapshot()["undecodable"] == 5
        assert len(emitted) == 1
        task, draft = emitted[0]
        assert task == "agent" and draft.type == "input_rejected" and "bad magic" in draft.body["reason"]

    def test_every_message_in_is_logged_at_debug_level(self) -> None:
        """At debug level each decoded message is logged with its sensor and sequence number (what the soak harness
        reads to tell input that never reached the agent from input the agent lost); at info level nothing is."""
        config = structlog.get_config()
        try:
            for level, wanted in ((logging.DEBUG, [("a", 0), ("a", 1), ("b", 0)]), (logging.INFO, [])):
                with structlog.testing.capture_logs() as logs:
                    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
                    dispatcher, _, _ = self.make()
                    for sensor, seq in (("a", 0), ("a", 1), ("b", 0)):
                        dispatcher.submit(encode(vibration_chunk(sensor, seq, 1.0, samples=10)))
                assert [(e["sensor"], e["seq"]) for e in logs if e["event"] == "sensor message"] == wanted
        finally:
            structlog.configure(**config)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400))
    def test_no_input_escapes_the_dispatcher(self, raw: bytes) -> None:
        """Random bytes never raise out of submit: they are counted as rejected or accepted."""
        dispatcher, stats, _ = self.make()
        dispatcher.submit(raw)
        snapshot = stats.snapshot()
        assert snapshot["undecodable"] + sum(s["received"] for s in snapshot["sensors"].values()) == 1
        assert snapshot["internal_errors"] == 0


def test_a_decoder_bug_is_counted_apart_from_rejected_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in our decoder is an internal error (logged with its traceback), not bad input from a sensor."""
    def broken_decode(raw: bytes, max_payload: int) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(pipeline, "decode", broken_decode)
    stats = Stats()
    acked: list[bool] = []
    Dispatcher(stats, 1 << 20, lambda *args, **kwargs: None).submit(b"anything", lambda: acked.append(True))
    snapshot = stats.snapshot()
    assert snapshot["internal_errors"] == 1 and snapshot["undecodable"] == 0 and acked == [True]


class TestIsolation:
    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.one_of(st.binary(max_size=120), st.integers(0, 2**32 - 1)), min_size=1, max_size=30))
    def test_bad_input_never_disturbs_another_sensors_stream(self, noise: list[bytes | int]) -> None:
        """Garbage and corrupted copies interleaved with a good stream leave that stream whole: no gap, no loss."""
        dispatcher, stats, _ = TestDispatcher().make()
        for seq, item in enumerate(noise):
            good = encode(vibration_chunk("good", seq, 1.0, samples=10))
            if isinstance(item, int):  # a corrupted copy of a message of another sensor
                other = bytearray(encode(vibration_chunk("other", seq, 1.0, samples=10)))
                other[item % len(other)] ^= 1 + item % 255
                dispatcher.submit(bytes(other))
            else:
                dispatcher.submit(item)
            dispatcher.submit(good)
        good_stats = stats.snapshot()["sensors"]["good"]
        assert good_stats["received"] == len(noise) and good_stats["gaps"] == 0 and good_stats["rejected"] == 0


class TestRejectionReporter:
    def test_suppressed_count_is_reported_with_the_next_report(self, tmp_path: Path) -> None:
        """After the interval, the next report says how many were suppressed meanwhile."""
        emitted: list[EventDraft] = []
        reporter = RejectionReporter(lambda task, draft: emitted.append(draft), interval_s=0.05)
        reporter("s1", "bad")
        reporter("s1", "bad")
        reporter("s1", "bad")
        time.sleep(0.06)  # the reporting interval passing is what is tested
        reporter("s1", "bad")
        assert [d.body["suppressed_since_last"] for d in emitted] == [0, 2]


class TestWindowBounds:
    def test_a_window_too_large_is_rejected_before_buffering(self) -> None:
        """A rate and channel count that would need more than MAX_WINDOW_VALUES per window are refused."""
        windower = Windower(3600.0, 3600.0)
        big = SensorMessage("s1", Kind.VIBRATION, 0, 10**18, np.zeros((10, 64), np.float32), 1e6)
        with pytest.raises(RejectedInput, match="more than"):
            windower.feed(big)
        assert windower.buffer is None

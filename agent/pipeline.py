"""The pipeline: decode and route sensor messages into bounded per-task queues, run task workers.

Overload policy: every task queue is bounded and drops its *oldest* item when
full.  For camera frames that is the intended behaviour (a fresher frame is worth
more); for continuous streams the drop is counted for the sensor and the
windower sees the sequence jump and restarts its window, so a drop is never silent.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import threading
import time
from collections.abc import Callable

import structlog

from agent.events import ClockJump, EventDraft, InputRejected
from agent.stats import Stats
from agent.tasks.base import RejectedInput, Task
from agent.windowing import Windower
from sensors.sources import Ack
from sensors.wire import SensorMessage, WireError, decode

log = structlog.get_logger(__name__)
Emit = Callable[[str, EventDraft], None]
REJECTION_REPORT_INTERVAL_S = 5.0
CLOCK_JUMP_NS = 1_000_000_000  # sensor clocks may wobble; a step back of more than this is reported
REJECTION_BODIES: dict[str, type[InputRejected] | type[ClockJump]] = {"input_rejected": InputRejected,
                                                                "clock_jump": ClockJump}


class BoundedQueue:
    """A FIFO that evicts its oldest item when full and says which one it evicted."""

    def __init__(self, maxlen: int) -> None:
        self.items: collections.deque[SensorMessage] = collections.deque()
        self.maxlen = maxlen
        self.ready = threading.Condition()
        self.waiting_putters = 0

    def put(self, item: SensorMessage, wait: bool = False) -> SensorMessage | None:
        """Append; when full, evict the oldest item, or with ``wait`` block until there is room."""
        with self.ready:
            while wait and len(self.items) >= self.maxlen:
                self.waiting_putters += 1
                self.ready.wait(0.1)
                self.waiting_putters -= 1
            evicted = self.items.popleft() if len(self.items) >= self.maxlen else None
            self.items.append(item)
            if len(self.items) == 1:  # only a consumer facing an empty queue can be waiting
                self.ready.notify()
            return evicted

    def get(self, timeout: float) -> SensorMessage | None:
        with self.ready:
            if not self.items:
                self.ready.wait(timeout)
            item = self.items.popleft() if self.items else None
            if self.waiting_putters:
                self.ready.notify_all()
            return item

    def __len__(self) -> int:
        return len(self.items)


class TaskWorker:
    """Runs one task on its own thread: queue -> (windowing) -> task.process -> events."""

    def __init__(self, task: Task, stats: Stats, emit: Emit, report: Callable[..., None]) -> None:
        self.task = task
        self.name = task.name
        self.stats = stats
        self.emit = emit
        self.report_rejection = report
        self.queue = BoundedQueue(task.config.queue_size)
        self.windowers: dict[str, Windower] = {}
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self.stopping = threading.Event()
        self.accepting = True
        self._swap_lock = threading.Lock()
        self.thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"task-{self.name}", daemon=True)
        thread.start()
        return thread

    def wants(self, message: SensorMessage) -> bool:
        return self.accepting and message.kind in self.task.kinds and any(
            fnmatch.fnmatchcase(message.sensor_id, pattern) for pattern in self.task.config.sensors)

    def offer(self, message: SensorMessage, wait: bool = False) -> None:
        evicted = self.queue.put(message, wait and self.thread.is_alive())
        if evicted is not None:
            with self.stats.lock:
                self.stats.sensors[evicted.sensor_id].dropped += 1
            evicted.ack()

    def _loop(self) -> None:
        last_tick = 0.0
        while True:
            self.heartbeat = time.monotonic()
            message = self.queue.get(0.2)
            if message is None and self.stopping.is_set():
                return
            with self._swap_lock:
                if message is not None:
                    self._handle(message)
                if time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    self._run(lambda: self.task.tick(time.time_ns()), None)

    def _handle(self, message: SensorMessage) -> None:
        received = time.monotonic()
        if not message.kind.continuous:
            self._run(lambda: self.task.process(message), message.sensor_id)
            message.ack()  # its events are in the outbox (or it was rejected and counted)
        else:
            windower = self.windowers.get(message.sensor_id)
            if windower is None:
                windower = self.windowers[message.sensor_id] = Windower(self.task.config.window_s,
                                                                        self.task.config.hop_s)
            windows, stream_break = windower.feed(message)
            if stream_break is not None:
                log.info("stream restarted", task=self.name, sensor=message.sensor_id, reason=stream_break.reason)
            for window in windows:
                self._run(lambda w=window: self.task.process(w), message.sensor_id)  # type: ignore[misc]
            windower.acknowledge()  # chunks whose every window is done (or that a break discarded)
        with self.stats.lock:
            entry = self.stats.tasks[self.name]
            entry.processed += 1
            entry.latencies_s.append(time.monotonic() - received)

    def _run(self, call: Callable[[], list[EventDraft]], sensor: str | None) -> None:
        self.busy_since = time.monotonic()
        try:
            drafts = call()
        except RejectedInput as error:
            with self.stats.lock:
                self.stats.tasks[self.name].rejected += 1
            self.stats.reject(sensor, str(error))
            self.report_rejection(sensor or "", f"{self.name}: {error}")
            return
        except Exception:  # a bad item must not stop the task; counted and logged with its traceback
            with self.stats.lock:
                self.stats.tasks[self.name].errors += 1
            log.exception("task failed on an item", task=self.name, sensor=sensor)
            return
        finally:
            self.busy_since = None
        for draft in drafts:
            self.emit(self.name, draft)
        if drafts:
            with self.stats.lock:
                self.stats.tasks[self.name].events += len(drafts)

    def swap(self, task: Task) -> Task:
        """Replace the task (after a reload) between two items; the queue and its data are kept."""
        with self._swap_lock:
            old, self.task = self.task, task
            self.queue.maxlen = task.config.queue_size
            if (old.config.window_s, old.config.hop_s) != (task.config.window_s, task.config.hop_s):
                self.windowers.clear()
        return old

    def ensure_running(self) -> bool:
        """Restart the thread if it died; returns True if it had to."""
        if self.thread.is_alive() or self.stopping.is_set():
            return False
        with self.stats.lock:
            self.stats.tasks[self.name].restarts += 1
        log.error("task worker died; restarting", task=self.name)
        self.thread = self._start_thread()
        return True

    def stuck_for(self, now: float) -> float:
        """How long the worker has been inside one call (0 if idle or between items)."""
        busy = self.busy_since
        return 0.0 if busy is None else now - busy

    def drain(self, deadline: float) -> int:
        """Stop taking new items, finish the queue until the deadline; returns items left."""
        self.accepting = False
        while len(self.queue) and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.02)
        self.stopping.set()
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return len(self.queue)


class Dispatcher:
    """Decodes raw messages, tracks sequence gaps and sensor liveness, routes to task workers."""

    def __init__(self, stats: Stats, max_payload: int, report: Callable[..., None]) -> None:
        self.stats = stats
        self.max_payload = max_payload
        self.workers: list[TaskWorker] = []
        self.report_rejection = report

    def submit(self, raw: bytes, ack: Ack | None = None, wait: bool = False) -> None:
        """Called from source threads with one wire message; never raises.

        ``ack`` (from sources that acknowledge input) is called once the message is done with: by
        every task that takes it, or here if it is rejected or no task wants it.  ``wait``
        (recordings read as fast as possible) blocks while a task queue is full instead of applying
        the overload policy: a file can wait, a live sensor cannot.
        """
        try:
            message = decode(raw, self.max_payload)
        except WireError as error:
            self.stats.reject(None, str(error))
            self.report_rejection("", str(error))
            _call(ack)
            return
        except Exception as error:  # belt and braces: no input may take a source thread down
            log.exception("decoder failed unexpectedly")
            self.stats.reject(None, f"internal decoder error: {error!r}")
            _call(ack)
            return
        self._track(message)
        takers = [worker for worker in self.workers if worker.wants(message)]
        if ack is not None:
            message = dataclasses.replace(message, ack=_after_all(ack, len(takers)) if takers else ack)
        if not takers:
            message.ack()
        for worker in takers:
            worker.offer(message, wait)

    def _track(self, message: SensorMessage) -> None:
        with self.stats.lock:
            entry = self.stats.sensors[message.sensor_id]
            entry.received += 1
            entry.last_seen = time.monotonic()
            last, entry.last_seq = entry.last_seq, message.seq
            last_time, entry.last_timestamp_ns = entry.last_timestamp_ns, message.timestamp_ns
            jumped = last_time is not None and message.timestamp_ns < last_time - CLOCK_JUMP_NS
            entry.clock_jumps += jumped
        if jumped:
            # the message is kept (seq says it is the next one); its time is the sensor's word
            back_s = (last_time - message.timestamp_ns) / 1e9  # type: ignore[operator]
            self.report_rejection(message.sensor_id, f"timestamp went back {back_s:.3f} s; message kept",
                                  "clock_jump")
        if last is not None and message.seq != last + 1:
            with self.stats.lock:
                entry.gaps += 1
                entry.missing += max(0, message.seq - last - 1)
            log.warning("sequence gap", sensor=message.sensor_id, expected=last + 1, got=message.seq)


def _call(ack: Ack | None) -> None:
    if ack is not None:
        ack()


def _after_all(ack: Ack, count: int) -> Ack:
    """An acknowledgement that fires once ``count`` tasks have each called it."""
    left = [count]
    lock = threading.Lock()

    def done() -> None:
        with lock:
            left[0] -= 1
            fire = left[0] == 0
        if fire:
            ack()

    return done


class RejectionReporter:
    """Turns rejections into rate-limited error events (one per sensor per interval, with a count)."""

    def __init__(self, emit: Emit, interval_s: float = REJECTION_REPORT_INTERVAL_S) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.suppressed: collections.Counter[str] = collections.Counter()

    def __call__(self, sensor: str, reason: str, event_type: str = "input_rejected") -> None:
        now = time.monotonic()
        key = f"{event_type}/{sensor}"
        with self.lock:
            if now - self.last.get(key, -1e9) < self.interval_s:
                self.suppressed[key] += 1
                return
            self.last[key] = now
            suppressed = self.suppressed.pop(key, 0)
        log.warning(event_type.replace("_", " "), sensor=sensor or None, reason=reason,
                    suppressed_since_last=suppressed)
        body = REJECTION_BODIES[event_type](reason=reason, suppressed_since_last=suppressed)
        self.emit("agent", body.draft(sensor, time.time_ns(), "warning"))


"""The pipeline: decode and route sensor messages into bounded per-task queues, run task workers.

Overload policy: every task queue is bounded and, when full, drops the *oldest* item of
the sensor with the most items queued (queues are fair per sensor: a flooding sensor only
loses its own items).  For camera frames that is the intended behaviour (a fresher frame
is worth more); for continuous streams the drop is counted for the sensor and the
windower sees the sequence jump and restarts its window, so a drop is never silent.

Isolation: an exception on one sensor's input (in windowing or in the task) rejects and
counts that input and may quarantine the sensor (agent/quarantine.py); it never kills the
worker.  Every per-sensor map is bounded (``max_sensors``, least recently seen evicted).
Every message discarded here (quarantined, evicted, unwanted, rejected) is acknowledged.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import math
import threading
import time
from collections.abc import Callable

import structlog

from agent.events import ClockJump, EventDraft, InputRejected
from agent.quarantine import Quarantine
from agent.stats import DEFAULT_MAX_SENSORS, BoundedMap, Stats
from agent.tasks.base import RejectedInput, Task
from agent.windowing import StreamBreak, Window, Windower
from sensors.sources import Ack
from sensors.wire import SensorMessage, SensorWireError, WireError, decode

log = structlog.get_logger(__name__)
Emit = Callable[[str, EventDraft], None]
REJECTION_REPORT_INTERVAL_S = 5.0
MAX_SOURCE_TIME_NS = 253_402_300_799 * 10**9  # 9999-12-31T23:59:59Z, the last time an event can carry
#: seconds acknowledged input (MQTT QoS 1) waits for room in a full task queue before the oldest is dropped
ACKED_INPUT_WAIT_S = 2.0
CLOCK_JUMP_NS = 1_000_000_000  # sensor clocks may wobble; a step back of more than this is reported


class BoundedQueue:
    """A fair bounded queue: one FIFO lane per sensor, served round-robin.

    When the queue is full, the oldest item of the *longest* lane is evicted (the new item's own lane
    when it ties), so a sensor that floods the queue only ever loses its own items, and a sensor with
    little traffic is served at its turn however long the flooding lane is.  Lanes of sensors that are
    not ``trusted`` (not yet established: new or junk ids) are evicted first, so that a flood of many
    fake ids, each with a short lane, cannot make an established sensor's lane the longest and the loser.
    """

    def __init__(self, maxlen: int, trusted: Callable[[str], bool] = lambda sensor: False) -> None:
        self.trusted = trusted
        self.lanes: dict[str, collections.deque[SensorMessage]] = {}
        self.turns: collections.deque[str] = collections.deque()  # sensors with items, in serving order
        self.size = 0
        self.maxlen = maxlen
        self.ready = threading.Condition()
        self.waiting_putters = 0

    def put(self, item: SensorMessage, wait: float = 0.0) -> SensorMessage | None:
        """Append; when full, wait up to ``wait`` seconds (``math.inf``: until there is room), then evict as above
        and return the evicted item."""
        deadline = time.monotonic() + wait
        with self.ready:
            while self.size >= self.maxlen and (left := deadline - time.monotonic()) > 0:
                self.waiting_putters += 1
                self.ready.wait(min(0.1, left))
                self.waiting_putters -= 1
            lane = self.lanes.get(item.sensor_id)
            if lane is None:
                lane = self.lanes[item.sensor_id] = collections.deque()
                self.turns.append(item.sensor_id)
            lane.append(item)
            self.size += 1
            evicted = self._evict() if self.size > self.maxlen else None
            if self.size == 1:  # only a consumer facing an empty queue can be waiting
                self.ready.notify()
            return evicted

    def _evict(self) -> SensorMessage:
        candidates = [sensor for sensor in self.turns if not self.trusted(sensor)] or self.turns
        longest = max(candidates, key=lambda sensor: len(self.lanes[sensor]))
        self.size -= 1
        return self._pop(longest)

    def _pop(self, sensor: str) -> SensorMessage:
        lane = self.lanes[sensor]
        item = lane.popleft()
        if not lane:
            del self.lanes[sensor]
            self.turns.remove(sensor)
        return item

    def get(self, timeout: float) -> SensorMessage | None:
        with self.ready:
            if not self.size:
                self.ready.wait(timeout)
            item = None
            if self.size:
                sensor = self.turns[0]
                self.turns.rotate(-1)  # the next sensor's turn; _pop removes this one if its lane empties
                item = self._pop(sensor)
                self.size -= 1
            if self.waiting_putters:
                self.ready.notify_all()
            return item

    def __len__(self) -> int:
        return self.size


class TaskWorker:
    """Runs one task on its own thread: queue -> (windowing) -> task.process -> events."""

    def __init__(self, task: Task, stats: Stats, emit: Emit, report: Callable[..., None],
                 quarantine: Quarantine | None = None, max_sensors: int = DEFAULT_MAX_SENSORS) -> None:
        self.task = task
        self.name = task.name
        self.stats = stats
        self.emit = emit
        self.report_rejection = report
        self.quarantine = quarantine or Quarantine(emit, max_sensors=max_sensors)
        self.queue = BoundedQueue(task.config.queue_size, self._established)
        # the sensors this worker has seen, with their windower (continuous kinds); only its thread touches it
        self.windowers: BoundedMap[str, Windower | None] = BoundedMap(max_sensors, lambda: None, self._forget)
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self.stopping = threading.Event()
        self.accepting = True
        self._swap_lock = threading.Lock()
        self.thread = self._start_thread()

    def _established(self, sensor: str) -> bool:
        """The sensor delivered valid data for a while (the daemon marks it): its items are evicted last."""
        entry = self.stats.sensors.get(sensor)  # a plain read: no reordering, the flag only ever turns on
        return entry is not None and entry.healthy

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name=f"task-{self.name}", daemon=True)
        thread.start()
        return thread

    def wants(self, message: SensorMessage) -> bool:
        return self.accepting and message.kind in self.task.kinds and any(
            fnmatch.fnmatchcase(message.sensor_id, pattern) for pattern in self.task.config.sensors)

    def offer(self, message: SensorMessage, wait: float = 0.0) -> None:
        """Queue the message, waiting up to ``wait`` seconds for room before the overload policy applies."""
        evicted = self.queue.put(message, wait if self.thread.is_alive() else 0.0)
        if evicted is not None:
            with self.stats.lock:
                self.stats.sensor(evicted.sensor_id).dropped += 1
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
                    try:
                        self._handle(message)
                    except Exception as error:  # e.g. windowing overflowed: this input's fault, not the worker's
                        self._failed(message.sensor_id, error, message.timestamp_ns, message.seq)
                        message.ack()
                if time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    self._expire_reordering()
                    self._run(lambda: self.task.tick(time.time_ns()))

    def _handle(self, message: SensorMessage) -> None:
        received = time.monotonic()
        sensor = message.sensor_id
        if self.quarantine.blocked(sensor):  # quarantined while it waited in the queue
            with self.stats.lock:
                self.stats.sensor(sensor).quarantined += 1
            message.ack()
            return
        if not message.kind.continuous:
            self.windowers.touch(sensor)
            self._run(lambda: self.task.process(message), message)
            message.ack()  # its events are in the outbox (or it was rejected and counted)
        else:
            windower = self.windowers.touch(sensor)
            if windower is None:
                config = self.task.config
                windower = self.windowers[sensor] = Windower(config.window_s, config.hop_s, config.reorder_chunks,
                                                             snapshot=self.task.snapshot_stream(sensor))
            try:
                windows, stream_break = windower.feed(message)
            except RejectedInput as error:
                self._rejected(sensor, str(error), message.timestamp_ns, message.seq)
                message.ack()
                return
            self._windows(windower, windows, stream_break, message)
        with self.stats.lock:
            entry = self.stats.tasks[self.name]
            entry.processed += 1
            entry.observe(time.monotonic() - received)

    def _windows(self, windower: Windower, windows: list[Window], stream_break: StreamBreak | None,
                 message: SensorMessage) -> None:
        """Run the task on the windows a chunk (or chunks held for reordering) completed, then release input."""
        if stream_break is not None:
            log.info("stream restarted", task=self.name, sensor=message.sensor_id, reason=stream_break.reason,
                     seq=message.seq, missing=stream_break.missing)
        for window in windows:
            self._run(lambda w=window: self.task.process(w), message, window)  # type: ignore[misc]
        windower.acknowledge()  # chunks whose every window is done (or that a break discarded)

    def _expire_reordering(self) -> None:
        """Chunks held ahead of a gap that stayed open too long go on, the gap declared (called every tick)."""
        for windower in list(self.windowers.values()):
            if windower is None or not windower.reorder:
                continue
            try:
                windows, stream_break, last = windower.expire()
            except Exception:  # a bug: the windower keeps its state; its input is acknowledged on discard
                log.exception("expiring held chunks failed", task=self.name)
                continue
            if last is not None:
                self._windows(windower, windows, stream_break, last)

    def _run(self, call: Callable[[], list[EventDraft]], message: SensorMessage | None = None,
             window: Window | None = None) -> None:
        """Run one task call and emit its events; a rejection or failure is counted against the input."""
        self.busy_since = time.monotonic()
        source_time = window.start_ns if window is not None else message.timestamp_ns if message else 0
        index = None if window is None else window.index
        try:
            drafts = call()
        except RejectedInput as error:
            if message is not None:
                self._rejected(message.sensor_id, str(error), source_time, message.seq, index)
            return
        except Exception as error:  # a bad item must not stop the task; counted and logged with its traceback
            if message is None:  # tick(): nobody's input to blame
                with self.stats.lock:
                    self.stats.tasks[self.name].errors += 1
                log.exception("task failed", task=self.name)
            else:
                self._failed(message.sensor_id, error, source_time, message.seq, index)
            return
        finally:
            self.busy_since = None
        for draft in drafts:
            self.emit(self.name, draft)
        if drafts:
            with self.stats.lock:
                self.stats.tasks[self.name].events += len(drafts)

    def _rejected(self, sensor: str, reason: str, source_time_ns: int, seq: int, window: int | None = None) -> None:
        with self.stats.lock:
            self.stats.tasks[self.name].rejected += 1
        self.stats.reject(sensor, reason)
        self.report_rejection(sensor, f"{self.name}: {reason}", source_time_ns=source_time_ns, seq=seq,
                              window=window)

    def _failed(self, sensor: str, error: Exception, source_time_ns: int, seq: int, window: int | None = None) -> None:
        """The task or windowing raised on this sensor's input: reject and count it, maybe quarantine the sensor."""
        reason = f"internal error on this input: {type(error).__name__}: {error}"
        with self.stats.lock:
            self.stats.tasks[self.name].errors += 1
        log.error("task failed on a sensor's input; input rejected", task=self.name, sensor=sensor, seq=seq,
                  exc_info=error)
        self._rejected(sensor, reason, source_time_ns, seq, window)
        self.quarantine.failed(sensor, reason, source_time_ns)
        if sensor in self.windowers:  # the failure may have left the window half-updated
            self._drop_windower(sensor)

    def _drop_windower(self, sensor: str) -> None:
        windower = self.windowers[sensor]
        if windower is not None:
            windower.discard()
            self.windowers[sensor] = None

    def _forget(self, sensor: str, windower: Windower | None) -> None:
        # evicted as least recently seen: the task drops its state for the sensor too (bounded memory)
        if windower is not None:
            windower.discard()
        try:
            self.task.forget(sensor)
        except Exception:
            log.exception("task failed to forget a sensor", task=self.name, sensor=sensor)

    def release(self, sensors: set[str]) -> None:
        """Let these sensors go (their input moved to another agent): drop their windows and task state."""
        with self._swap_lock:
            for sensor in sensors & set(self.windowers):
                self._forget(sensor, self.windowers.pop(sensor))

    def swap(self, task: Task) -> Task:
        """Replace the task (after a reload) between two items; the queue and its data are kept."""
        with self._swap_lock:
            old, self.task = self.task, task
            self.queue.maxlen = task.config.queue_size
            if (old.config.window_s, old.config.hop_s) != (task.config.window_s, task.config.hop_s):
                for sensor in list(self.windowers):
                    self._drop_windower(sensor)
            for windower in self.windowers.values():
                if windower is not None:
                    windower.reorder.max_chunks = task.config.reorder_chunks  # more than that held: the next feed
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

    def __init__(self, stats: Stats, max_payload: int, report: Callable[..., None],
                 quarantine: Quarantine | None = None) -> None:
        self.stats = stats
        self.max_payload = max_payload
        self.workers: list[TaskWorker] = []
        self.report_rejection = report
        self.quarantine = quarantine or Quarantine(lambda *_: None)  # shared with the workers by the agent

    def submit(self, raw: bytes, ack: Ack | None = None, wait: bool = False, gaps: bool = True) -> None:
        """Called from source threads with one wire message; never raises.

        ``ack`` (from sources that acknowledge input) is called once the message is done with: by
        every task that takes it, or here if it is rejected or no task wants it.  ``wait``
        (recordings read as fast as possible) blocks while a task queue is full instead of applying
        the overload policy: a file can wait, a live sensor cannot.  Input with an ``ack`` waits up
        to :data:`ACKED_INPUT_WAIT_S` for room: the broker keeps it until acknowledged, so holding it
        back loses nothing, whereas dropping it would lose a burst (the backlog a broker delivers
        at a reconnect) that the task works off in well under that time.  ``gaps`` off: the source gets only
        part of each stream (an MQTT shared subscription), so a skipped sequence number is not a gap.
        """
        try:
            message = decode(raw, self.max_payload)
        except SensorWireError as error:  # the sensor is known: counted against it, with its time and seq
            self.stats.reject(error.sensor_id, str(error))
            self.report_rejection(error.sensor_id, str(error), source_time_ns=error.timestamp_ns, seq=error.seq)
            _call(ack)
            return
        except WireError as error:
            self.stats.reject(None, str(error))
            self.report_rejection("", str(error))
            _call(ack)
            return
        except Exception as error:  # belt and braces: no input may take a source thread down
            log.exception("decoder failed unexpectedly: a bug, not bad input", error=repr(error))
            with self.stats.lock:
                self.stats.internal_errors += 1
            _call(ack)
            return
        if ack is not None:
            message = dataclasses.replace(message, ack=ack)
        self.route(message, math.inf if wait else ACKED_INPUT_WAIT_S if ack is not None else 0.0, gaps)

    def route(self, message: SensorMessage, wait: float = 0.0, gaps: bool = True) -> None:
        """Count a decoded message and queue it for every task that wants it (or acknowledge it if none does)."""
        if self.quarantine.blocked(message.sensor_id):
            with self.stats.lock:
                self.stats.sensor(message.sensor_id).quarantined += 1
            message.ack()
            return
        self._track(message, gaps)
        targets = [worker for worker in self.workers if worker.wants(message)]
        if len(targets) > 1:  # acknowledged once, when the last task is done with it
            message = dataclasses.replace(message, ack=_countdown(message.ack, len(targets)))
        elif not targets:
            message.ack()
        for worker in targets:
            worker.offer(message, wait)

    def _track(self, message: SensorMessage, gaps: bool) -> None:
        # at debug level, every message in: the soak harness tells input lost upstream from input the agent lost
        log.debug("sensor message", sensor=message.sensor_id, seq=message.seq)
        with self.stats.lock:
            entry = self.stats.sensor(message.sensor_id)
            entry.received += 1
            entry.last_seen = time.monotonic()
            if entry.first_valid is None:
                entry.first_valid = entry.last_seen
            last, entry.last_seq = entry.last_seq, message.seq
            last_time, entry.last_timestamp_ns = entry.last_timestamp_ns, message.timestamp_ns
            jumped = last_time is not None and message.timestamp_ns < last_time - CLOCK_JUMP_NS
            entry.clock_jumps += jumped
        if jumped:
            # the message is kept (seq says it is the next one); its time is the sensor's word
            back_s = (last_time - message.timestamp_ns) / 1e9  # type: ignore[operator]
            self.report_rejection(message.sensor_id, f"timestamp went back {back_s:.3f} s; message kept",
                                  "clock_jump", source_time_ns=message.timestamp_ns)
        if gaps and last is not None and message.seq != last + 1:
            with self.stats.lock:
                entry.gaps += 1
                entry.missing += max(0, message.seq - last - 1)
            log.warning("sequence gap", sensor=message.sensor_id, expected=last + 1, got=message.seq)


def _call(ack: Ack | None) -> None:
    if ack is not None:
        ack()


def _countdown(ack: Callable[[], None], count: int) -> Callable[[], None]:
    lock, left = threading.Lock(), [count]

    def done() -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            ack()

    return done


class RejectionReporter:
    """Turns rejections into rate-limited error events (one per sensor per interval, with a count)."""

    def __init__(self, emit: Emit, interval_s: float = REJECTION_REPORT_INTERVAL_S,
                 max_sensors: int = DEFAULT_MAX_SENSORS) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self.lock = threading.Lock()
        # per event type and sensor: (time of the last report, rejections suppressed since)
        self.last: BoundedMap[str, list[float]] = BoundedMap(2 * max_sensors, lambda: [-1e9, 0])

    def __call__(self, sensor: str, reason: str, event_type: str = "input_rejected", *,
                 source_time_ns: int | None = None, seq: int | None = None, window: int | None = None) -> None:
        """Report one rejection; ``source_time_ns`` is the rejected data's time (the agent's clock if unknown)."""
        now = time.monotonic()
        with self.lock:
            entry = self.last.touch(f"{event_type}/{sensor}")
            if now - entry[0] < self.interval_s:
                entry[1] += 1
                return
            suppressed = int(entry[1])
            entry[:] = [now, 0]
        log.warning(event_type.replace("_", " "), sensor=sensor or None, reason=reason,
                    suppressed_since_last=suppressed)
        if event_type == "input_rejected":
            body: InputRejected | ClockJump = InputRejected(reason=reason, suppressed_since_last=suppressed,
                                                            seq=seq, window=window)
        else:
            body = ClockJump(reason=reason, suppressed_since_last=suppressed)
        valid_time = source_time_ns is not None and 0 < source_time_ns <= MAX_SOURCE_TIME_NS
        self.emit("agent", body.draft(sensor, source_time_ns if valid_time else time.time_ns(),  # type: ignore[arg-type]
                                      "warning"))

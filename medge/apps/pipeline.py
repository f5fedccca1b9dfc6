"""Streaming pipeline for the apps: a source, stages and sinks, each in its own thread.

Threads are joined by size-1 `Slot`s.  In the default "latest wins" mode a put overwrites an
unconsumed item and counts a drop, so latency never queues up behind a slow stage; in lossless
mode (unpaced replay) the producer waits instead, so every item is processed and the rate
measures throughput.  Sinks (view, recorder, window) get their own slot after the last stage;
a lossy sink never slows the stages.

Every `Item` carries a monotonic acquisition time (``time.perf_counter``) and the start/end time
of each stage; `PipelineStats` turns them into per-stage and end-to-end p50/p95/p99/max (warm-up
items excluded), achieved rate and drops per slot, readable live (`Pipeline.stats`) and at the end.
Frame accounting always closes: ``in = out + dropped + corrupt + discarded``.  A source may also
yield `SourceEvent`s (a stall, a lost and reopened device, a new frame size): they are not frames,
so they are counted apart (``source.events``) together with the time spent without signal.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medge.apps.scheduling import set_os_thread_name
from medge.evaluate.statistics import LATENCY_KEYS

clock = time.perf_counter  # monotonic, high resolution; every timestamp in an Item uses it


@dataclass
class Corrupt:
    """Yield this from a source for an unreadable item: it is counted (by reason), never processed."""

    reason: str


@dataclass
class SourceEvent:
    """Yield this from a source when something happens to the source itself (not a frame).

    `kind` is counted (e.g. "stall", "lost", "reopened", "resize"); `signal` False means the source
    delivers nothing from now on, True that it delivers again, None that the signal state is unchanged.
    `at` is when the signal state changed (a `clock()` time; default: when the event is counted).
    """

    kind: str
    signal: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float | None = None


@dataclass
class Item:
    """One unit of work flowing through the pipeline with its clock."""

    seq: int
    data: Any
    t_acquired: float
    stamps: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage → (start, end)
    flags: set[str] = field(default_factory=set)  # e.g. "screened_out"; counted at the end

    def latency_ms(self, now: float | None = None) -> float:
        """Milliseconds from acquisition to `now` (default: the current time)."""
        return ((clock() if now is None else now) - self.t_acquired) * 1e3


@dataclass
class Stage:
    """A processing step: ``fn(item) -> new data`` (None discards the item, counted)."""

    name: str
    fn: Callable[[Item], Any]
    close: Callable[[], None] | None = None  # called in the stage's thread when it ends


@dataclass
class Sink:
    """An end point fed after the last stage: ``fn(item) -> None``.

    A lossy sink (a view) gets the latest item only; a lossless sink (a recorder) gets every
    item and so can hold the stages back when it is slower than them.
    """

    name: str
    fn: Callable[[Item], None]
    lossless: bool = False
    close: Callable[[], None] | None = None


class Closed(Exception):
    """Raised by `Slot.get` when the producer has finished and the slot is empty."""


class Slot:
    """A one-item hand-over between two threads (latest wins, or lossless)."""

    def __init__(self, name: str, lossless: bool = False) -> None:
        self.name = name
        self.lossless = lossless
        self.drops = 0
        self.puts = 0
        self._item: Item | None = None
        self._closed = False
        self._aborted = False
        self._cond = threading.Condition()

    def put(self, item: Item) -> Item | None:
        """Hand over `item`; returns the item it overwrote (latest-wins mode) or None."""
        with self._cond:
            if self.lossless:
                while self._item is not None and not self._aborted:
                    self._cond.wait()
                if self._aborted:
                    return item
            dropped, self._item = self._item, item
            self.puts += 1
            if dropped is not None:
                self.drops += 1
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> Item | None:
        """Take the item (waits); None on timeout; raises `Closed` once closed and empty."""
        with self._cond:
            deadline = None if timeout is None else clock() + timeout
            while self._item is None:
                if self._closed or self._aborted:
                    raise Closed(self.name)
                remaining = None if deadline is None else deadline - clock()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts: the consumer drains what is left, then gets `Closed`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Release every waiter now (after an error)."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


class LatencyHistogram:
    """Bounded-memory latency distribution: log-spaced bins 1 µs … 1000 s, 0.5 % wide."""

    _LO, _RATIO = 1e-3, 1.005  # ms
    _BINS = int(math.log(1e6 / 1e-3) / math.log(1.005)) + 2

    def __init__(self) -> None:
        self.counts = np.zeros(self._BINS, dtype=np.int64)
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, ms: float) -> None:
        """Record one latency in milliseconds."""
        ms = max(float(ms), 0.0)
        idx = 0 if ms <= self._LO else min(int(math.log(ms / self._LO) / math.log(self._RATIO)) + 1, self._BINS - 1)
        self.counts[idx] += 1
        self.n += 1
        self.max = max(self.max, ms)
        self.total += ms

    def percentile(self, q: float) -> float | None:
        """The `q`-th percentile (0–100) in ms, within half a bin (0.25 %); None when empty."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.n))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        if idx == 0:
            return self._LO
        centre = self._LO * self._RATIO ** (idx - 0.5)
        return min(centre, self.max)

    def summary(self) -> dict[str, float | int | None]:
        """The key set of `medge.evaluate.statistics.LATENCY_KEYS` in ms (values None when empty)."""
        empty = self.n == 0
        values = {"p50": self.percentile(50), "p90": self.percentile(90), "p95": self.percentile(95),
                  "p99": self.percentile(99), "max": None if empty else self.max,
                  "mean": None if empty else self.total / self.n, "count": self.n}
        return {key: values[key] for key in LATENCY_KEYS}


class PipelineStats:
    """Thread-safe counters and latency distributions of one pipeline run."""

    def __init__(self, stage_names: list[str], sink_names: list[str], warmup: int) -> None:
        self.warmup = warmup
        self._lock = threading.Lock()
        self.frames_in = 0
        self.out = 0
        self.corrupt: dict[str, int] = {}
        self.discarded: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self._no_signal_since: float | None = None
        self._no_signal_s = 0.0
        self.stages = {n: LatencyHistogram() for n in stage_names}
        self.sinks = {n: LatencyHistogram() for n in sink_names}
        self.end_to_end = LatencyHistogram()
        self._t_first: float | None = None  # first post-warm-up output
        self._t_last: float | None = None
        self._n_timed = 0
        self._recent: deque[float] = deque(maxlen=64)
        self.t_start = clock()
        self.t_end: float | None = None

    def record_in(self) -> int:
        with self._lock:
            self.frames_in += 1
            return self.frames_in - 1

    def record_corrupt(self, reason: str) -> None:
        with self._lock:
            self.frames_in += 1
            self.corrupt[reason] = self.corrupt.get(reason, 0) + 1

    def record_event(self, event: SourceEvent) -> None:
        with self._lock:
            self.events[event.kind] = self.events.get(event.kind, 0) + 1
            at = clock() if event.at is None else event.at
            if event.signal is False and self._no_signal_since is None:
                self._no_signal_since = at
            elif event.signal is True and self._no_signal_since is not None:
                self._no_signal_s += max(0.0, at - self._no_signal_since)
                self._no_signal_since = None

    def record_discard(self, stage: str) -> None:
        with self._lock:
            self.discarded[stage] = self.discarded.get(stage, 0) + 1

    def record_out(self, item: Item, now: float) -> None:
        with self._lock:
            self.out += 1
            for flag in item.flags:
                self.flags[flag] = self.flags.get(flag, 0) + 1
            self._recent.append(now)
            if item.seq < self.warmup:
                return
            for name, (start, end) in item.stamps.items():
                if name in self.stages:
                    self.stages[name].add((end - start) * 1e3)
            self.end_to_end.add((now - item.t_acquired) * 1e3)
            if self._t_first is None:
                self._t_first = now
            self._t_last = now
            self._n_timed += 1

    def record_sink(self, sink: str, item: Item, now: float) -> None:
        if item.seq < self.warmup:
            return
        with self._lock:
            self.sinks[sink].add((now - item.t_acquired) * 1e3)

    def record_latency(self, name: str, t_acquired: float) -> None:
        """Time an end point outside the pipeline's threads (e.g. a view that draws a frame when a
        client asks for it): from acquisition to now, under ``latency_ms.sinks[name]``."""
        now = clock()
        with self._lock:
            self.sinks[name].add((now - t_acquired) * 1e3)

    def snapshot(self, slots: list[Slot], running: bool) -> dict[str, Any]:
        """A consistent JSON-ready copy of the stats (safe to call from any thread at any time)."""
        with self._lock:
            now = clock()
            fps = None
            if self._n_timed >= 2 and self._t_last is not None and self._t_first is not None and self._t_last > self._t_first:
                fps = (self._n_timed - 1) / (self._t_last - self._t_first)
            recent = list(self._recent)
            recent_fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else None
            chain = [s for s in slots if not s.name.startswith("sink:")]
            dropped = sum(s.drops for s in chain)
            lost_since = self._no_signal_since
            no_signal_s = self._no_signal_s + ((self.t_end or now) - lost_since if lost_since is not None else 0.0)
            return {
                "running": running,
                "elapsed_s": ((self.t_end or now) - self.t_start),
                "warmup_items": self.warmup,
                "frames": {"in": self.frames_in, "out": self.out, "dropped": dropped,
                           "corrupt": sum(self.corrupt.values()), "discarded": sum(self.discarded.values()),
                           "flags": dict(self.flags)},
                "corrupt_reasons": dict(self.corrupt),
                "discarded_by_stage": dict(self.discarded),
                "drops": {s.name: s.drops for s in slots},
                "source": {"signal": lost_since is None, "events": dict(self.events), "no_signal_s": no_signal_s},
                "fps": fps,
                "fps_recent": recent_fps,
                "latency_ms": {
                    "end_to_end": self.end_to_end.summary(),
                    "stages": {n: h.summary() for n, h in self.stages.items()},
                    "sinks": {n: h.summary() for n, h in self.sinks.items()},
                },
            }


class Pipeline:
    """Run ``source → stages → sinks``, each in its own thread, joined by size-1 slots.

    `source` is any iterable of payloads (or `Corrupt` / `SourceEvent` markers).  `pace` spaces the
    items out: seconds between items (a float, a callable ``index → seconds``, or None for "as they
    come").  `lossless` makes the stage slots wait instead of overwrite: use it for unpaced replay
    only; a live or paced source must never wait.  `limit` stops after that many source items
    (frames and corrupt ones; events do not count).  `on_event` is called, in the source thread,
    with every `SourceEvent` once it is counted.  `timed` names end points timed from outside
    (`PipelineStats.record_latency`), reported with the sinks.
    """

    def __init__(self, source: Iterable[Any], stages: list[Stage], sinks: list[Sink] | None = None, *,
                 lossless: bool = False, pace: float | Callable[[int], float] | None = None,
                 limit: int | None = None, warmup: int = 5, source_name: str = "source",
                 on_event: Callable[[SourceEvent], None] | None = None, timed: Iterable[str] = ()) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        names = [source_name, *(s.name for s in stages)]
        sinks = list(sinks or [])
        if len(set(names + [s.name for s in sinks])) != len(names) + len(sinks):
            raise ValueError(f"stage and sink names must be unique: {names + [s.name for s in sinks]}")
        self._source, self._stages, self._sinks = source, stages, sinks
        self._pace, self._limit, self._source_name = pace, limit, source_name
        self._on_event = on_event
        self._slots = [Slot(f"{names[i]}->{names[i + 1]}", lossless) for i in range(len(stages))]
        self._sink_slots = [Slot(f"sink:{s.name}", s.lossless) for s in sinks]
        self.stats_data = PipelineStats([s.name for s in stages], [*(s.name for s in sinks), *timed], warmup)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()

    # --- control ------------------------------------------------------------------------------
    @property
    def stop_event(self) -> threading.Event:
        """Set when a stop was requested (sources may wait on it instead of sleeping)."""
        return self._stop

    def start(self) -> "Pipeline":
        """Start every thread and return at once."""
        targets = [(self._source_name, self._run_source)]
        targets += [(st.name, lambda i=i: self._run_stage(i)) for i, st in enumerate(self._stages)]
        targets += [(sk.name, lambda i=i: self._run_sink(i)) for i, sk in enumerate(self._sinks)]
        for name, target in targets:
            thread = threading.Thread(target=self._guard(target, f"medge-{name}"), name=f"medge-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        """Ask the source to stop; the stages drain what is in flight, then every thread ends."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every thread; True when all ended.  Re-raises the first error of any thread."""
        deadline = None if timeout is None else clock() + timeout
        for thread in self._threads:
            while thread.is_alive():
                left = None if deadline is None else deadline - clock()
                if left is not None and left <= 0:
                    return False
                thread.join(0.2 if left is None else min(0.2, left))
        if self.stats_data.t_end is None:
            self.stats_data.t_end = clock()
        if self._error is not None:
            raise self._error
        return True

    def run(self, *, handle_signals: bool = True, progress: Callable[[dict[str, Any]], None] | None = None,
            progress_interval_s: float = 2.0) -> dict[str, Any]:
        """Start, wait until the source is exhausted (or SIGINT/SIGTERM/`stop`) and return the stats.

        The first SIGINT/SIGTERM stops the source and lets the stages drain; a second SIGINT raises
        KeyboardInterrupt at once.
        `progress` is called with the live stats every `progress_interval_s` seconds meanwhile.
        """
        previous: dict[int, Any] = {}

        def on_signal(signum: int, _frame: Any) -> None:
            if self._stop.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: give up waiting
                raise KeyboardInterrupt
            self.stop()

        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            while not self.join(progress_interval_s if progress is not None else None):
                progress(self.stats())  # type: ignore[misc]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """Live (or final) stats; thread-safe."""
        running = any(t.is_alive() for t in self._threads)
        snap = self.stats_data.snapshot(self._slots + self._sink_slots, running)
        snap["stopped_early"] = self._stop.is_set()
        return snap

    # --- threads ------------------------------------------------------------------------------
    def _guard(self, target: Callable[[], None], name: str) -> Callable[[], None]:
        def run() -> None:
            set_os_thread_name(name)  # `top -H` shows which stage spends the CPU
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - handed to join() in the main thread
                with self._error_lock:
                    if self._error is None:
                        self._error = exc
                self._stop.set()
                for slot in self._slots + self._sink_slots:
                    slot.abort()
        return run

    def _paced(self) -> Iterator[Any]:
        due, index = None, -1
        for payload in self._source:
            if isinstance(payload, SourceEvent):  # not a frame: no pacing slot
                yield payload
                continue
            index += 1
            if self._pace is not None:
                interval = self._pace(index) if callable(self._pace) else self._pace
                now = clock()
                due = now if due is None or due < now - interval else due  # never burst to catch up
                if due > now and self._stop.wait(due - now):
                    return
                due += interval
            yield payload

    def _run_source(self) -> None:
        out = self._slots[0]
        try:
            count = 0
            for payload in self._paced():
                if self._stop.is_set() or (self._limit is not None and count >= self._limit):
                    break
                if isinstance(payload, SourceEvent):
                    self.stats_data.record_event(payload)
                    if self._on_event is not None:
                        self._on_event(payload)
                    continue
                count += 1
                if isinstance(payload, Corrupt):
                    self.stats_data.record_corrupt(payload.reason)
                else:
                    now = clock()
                    item = Item(self.stats_data.record_in(), payload, now)
                    item.stamps[self._source_name] = (now, now)
                    out.put(item)
                if self._limit is not None and count >= self._limit:  # at once: a live source may not send more
                    break
        finally:
            close = getattr(self._source, "close", None)
            if callable(close):
                close()
            out.close()

    def _run_stage(self, index: int) -> None:
        stage, inbox = self._stages[index], self._slots[index]
        last = index == len(self._stages) - 1
        try:
            while True:
                try:
                    item = inbox.get()
                except Closed:
                    return
                start = clock()
                result = stage.fn(item)
                end = clock()
                if result is None:
                    self.stats_data.record_discard(stage.name)
                    continue
                item.data = result
                item.stamps[stage.name] = (start, end)
                if last:
                    self.stats_data.record_out(item, end)
                    for slot in self._sink_slots:
                        slot.put(item)
                else:
                    self._slots[index + 1].put(item)
        finally:
            for slot in ([*self._sink_slots] if last else [self._slots[index + 1]]):
                slot.close()
            if stage.close is not None:
                stage.close()

    def _run_sink(self, index: int) -> None:
        sink, inbox = self._sinks[index], self._sink_slots[index]
        try:
            while True:
                try:
                    item = inbox.get()
                except Closed:
                    return
                sink.fn(item)
                self.stats_data.record_sink(sink.name, item, clock())
        finally:
            if sink.close is not None:
                sink.close()

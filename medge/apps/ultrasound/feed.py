"""What the ultrasound pipeline reads: a frame source that survives stalls, loss and new frame sizes.

`Feed` wraps a `FrameSource` and adds `SourceEvent`s to its frames:

- ``resize``: a frame whose size differs from the one before (any source); the frame itself is
  passed on at its own size and processed like any other;
- ``stall``: a live source delivered nothing for `stall_s` seconds ("no signal" until the next frame);
- ``lost``: a live source ended or failed (capture card unplugged, stream closed); the feed reopens
  it with exponential backoff (``reopen_failed`` for each failed try, ``reopened`` once it is back);
- ``restored``: the first frame after a stall or a loss (its ``gap_s`` is in the event and the frame).

A file that ends is a normal end.  A live source is read in its own thread (which also owns the
device: it opens, reads and releases it), so a read that blocks never hides a stall.  The hand-over
to the pipeline is lossless: every frame the device delivers is counted by the pipeline.
Events carry no error text (a stream URL may hold credentials).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

from medge.apps.pipeline import Closed, Corrupt, Item, Slot, SourceEvent, clock
from medge.apps.ultrasound.sources import Frame, FrameSource
from medge.common.errors import MedgeError

log = logging.getLogger(__name__)

RESTORED_NOTICE_S = 1.0  # frames this long after the signal came back carry a notice (burned into the overlay)


class Feed(FrameSource):
    """`source` with resize events and, when it is live, stall detection and reopening (see module doc).

    `reopen` opens the same source again (raising `MedgeError` while it is not there); setting `stop`
    (e.g. the pipeline's stop event) or `close()` ends waits and backoff within 0.1 s.  Backoff between reopen tries doubles from `backoff_s` up to `max_backoff_s`.
    """

    def __init__(self, source: FrameSource, reopen: Callable[[], FrameSource] | None = None, *, stall_s: float = 1.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, stop: threading.Event | None = None) -> None:
        if stall_s <= 0:
            raise ValueError("stall_s must be > 0")
        self._source, self._reopen = source, reopen
        self.info = source.info
        self.stall_s, self.backoff_s, self.max_backoff_s = stall_s, backoff_s, max_backoff_s
        self.stop = stop or threading.Event()
        self._closed = threading.Event()
        self.sizes: list[tuple[int, int]] = [(source.info.width, source.info.height)]
        self._reader: threading.Thread | None = None
        self._handover: Slot | None = None

    def interval(self, index: int) -> float:
        return self._source.interval(index)

    def __iter__(self) -> Iterator[Frame | Corrupt | SourceEvent]:
        payloads = self._live() if self.info.live else iter(self._source)
        size = self.sizes[0]
        for payload in payloads:
            if isinstance(payload, Frame):
                new = (payload.image.shape[1], payload.image.shape[0])
                if new != size:
                    yield SourceEvent("resize", detail={"from": list(size), "to": list(new)})
                    if new not in self.sizes:
                        self.sizes.append(new)
                    size = new
            yield payload

    # --- live sources ---------------------------------------------------------------------------
    def _live(self) -> Iterator[Frame | Corrupt | SourceEvent]:
        handover = self._handover = Slot("device->feed", lossless=True)
        self._reader = threading.Thread(target=self._read, args=(handover,), name="medge-device", daemon=True)
        self._reader.start()
        last = clock()
        lost_at: float | None = None
        restored_at: float | None = None
        gap, base, next_index = 0.0, 0, 0  # a reopened source counts its frames from 0 again: keep numbering on
        while not self._stopping():
            try:
                item = handover.get(timeout=min(0.1, self.stall_s))
            except Closed:
                return
            now = clock()
            if item is None:
                if lost_at is None and now - last >= self.stall_s:
                    lost_at = last
                    yield SourceEvent("stall", signal=False, at=last)
                continue
            payload = item.data
            if isinstance(payload, Corrupt):  # a frame not delivered or not decodable is no signal either
                yield payload
                continue
            if isinstance(payload, SourceEvent):
                if payload.kind == "reopened":
                    base = next_index
                if payload.signal is False and lost_at is not None:
                    payload = replace(payload, signal=None)  # already without signal (a stall first)
                elif payload.signal is False:
                    lost_at = last
                    payload.at = last
                yield payload
                continue
            last = now
            if lost_at is not None:
                gap, lost_at, restored_at = now - lost_at, None, now
                yield SourceEvent("restored", signal=True, detail={"gap_s": round(gap, 3)})
            payload.index += base
            next_index = payload.index + 1
            if restored_at is not None and now - restored_at < RESTORED_NOTICE_S:
                payload.notice = f"no signal for {gap:.1f} s"
            yield payload

    def _read(self, handover: Slot) -> None:
        """The device thread: read, hand over, and reopen with backoff when the source is lost."""
        source: FrameSource | None = self._source
        delay = self.backoff_s

        def put(payload: object) -> bool:
            handover.put(Item(0, payload, clock()))
            return not self._stopping()

        try:
            while not self._stopping():
                if source is None:
                    try:
                        source = self._reopen()  # type: ignore[misc] - never None here (see below)
                    except MedgeError as exc:
                        log.debug("reopening the source failed: %s", type(exc).__name__)
                        source = None
                    if source is None:
                        if not put(SourceEvent("reopen_failed")) or self._wait(delay):
                            return
                        delay = min(2 * delay, self.max_backoff_s)
                        continue
                    delay = self.backoff_s
                    if not put(SourceEvent("reopened")):
                        return
                reason = "ended"
                try:
                    for payload in source:
                        if not put(payload):
                            return
                except (MedgeError, OSError) as exc:
                    log.debug("the source failed: %s", type(exc).__name__)
                    reason = "failed"
                source.close()
                source = None
                if not put(SourceEvent("lost", signal=False, detail={"reason": reason})) or self._reopen is None:
                    return
                if self._wait(delay):
                    return
                delay = min(2 * delay, self.max_backoff_s)
        finally:
            if source is not None:
                source.close()
            handover.close()

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._closed.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopped first; True when stopped."""
        deadline = clock() + seconds
        while not self._stopping():
            left = deadline - clock()
            if left <= 0:
                return False
            self._closed.wait(min(0.1, left))
        return True

    def close(self) -> None:
        """Stop reading; the device thread releases the device (a read stuck in the driver is left to end)."""
        self._closed.set()
        if self._reader is None:
            self._source.close()
            return
        if self._handover is not None:
            self._handover.abort()
        self._reader.join(2.0)
        if self._reader.is_alive():
            log.debug("the device thread is still in a read; it releases the device when the read returns")

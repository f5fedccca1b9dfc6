"""Reading a serial link that drops: silences become recorded losses, a vanished port is reopened.

Two silences are different cases.  No valid frame since the start for `SILENCE_LIMIT_S` is a wrong
baud rate or protocol: `NoValidFramesError`.  Valid frames, then none for `LOSS_AFTER_S` (or the
port device going away) is a lost link: `LinkReader` records a `LinkLoss`, reopens the port with
backoff when it vanished (USB re-enumeration, a pty created again at the same path), and keeps
reading.  When frames come back the `Receiver` places them by their counter (exact gap), else by
the clock; while none arrive the clock says how many samples are missing.  Only the caller's
`stop`, or `give_up_after_s` of one continuous loss, ends the reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from medge.apps.ecg.serial_reader import NoValidFramesError, PortClosedError, Receiver, SampleBlock
from medge.common.errors import DataError
from medge.common.registry import import_optional

SILENCE_LIMIT_S = 5.0  # no valid frame since the start: wrong --baud/--protocol
LOSS_AFTER_S = 1.0  # no valid frame for this long after valid ones: the link is lost
TICK_S = 0.25  # how often a lost link is reported to the caller
BACKOFF_S = (0.1, 1.0)  # first and longest wait between attempts to reopen a vanished port


@dataclass
class LinkLoss:
    """One lost link: from the sample after the last one received to the first one after it."""

    start: int  # absolute index of the first missing sample
    began: float  # pipeline clock of the last valid frame before the loss
    seconds: float = 0.0  # from the last valid frame before to the first valid frame after (or the end)
    length: int = 0  # missing samples
    length_from: str = ""  # counter, clock, or counter+clock (the Cyton's counter wrapped)
    reopens: int = 0  # times the port was reopened during the loss

    def to_dict(self) -> dict[str, Any]:
        """The report's entry."""
        return {"start": self.start, "length": self.length, "seconds": round(self.seconds, 3),
                "length_from": self.length_from, "reopens": self.reopens}

    def describe(self) -> str:
        """``signal lost for 8.0 s at sample 3000 (4000 samples missing, from the counter)``."""
        return (f"signal lost for {self.seconds:.1f} s at sample {self.start} "
                f"({self.length} samples missing, from the {self.length_from})")


class LinkReader:
    """Drain a serial port through link losses; `events()` yields blocks, and None while the link is lost."""

    def __init__(self, ser: Any, receiver: Receiver, rate_hz: float, *, reopen: Callable[[], Any],
                 stop: Callable[[], bool] = lambda: False, give_up_after_s: float | None = None,
                 log: Callable[[str], None] = lambda _msg: None, silence_limit_s: float = SILENCE_LIMIT_S,
                 loss_after_s: float = LOSS_AFTER_S) -> None:
        self.ser, self.receiver, self.rate_hz = ser, receiver, rate_hz
        self.stop, self._reopen, self._log = stop, reopen, log
        self.give_up_after_s, self.silence_limit_s, self.loss_after_s = give_up_after_s, silence_limit_s, loss_after_s
        self.port_name = str(getattr(ser, "port", "") or "")
        self.losses: list[LinkLoss] = []
        self.current: LinkLoss | None = None
        self.reopens = 0
        self.gave_up = False
        self._last_valid = time.perf_counter()
        self._backoff = BACKOFF_S[0]
        self._next_attempt = 0.0

    def lost_for(self, now: float) -> float:
        """Seconds since the last valid frame while the link is lost, else 0."""
        return now - self.current.began if self.current is not None else 0.0

    def status(self, now: float) -> dict[str, Any]:
        """Live state for the browser view: ``alert`` reads "signal lost for N s" while the link is lost."""
        lost = self.lost_for(now)
        return {"alert": f"signal lost for {lost:.0f} s" if self.current is not None else None,
                "link": {"lost": self.current is not None, "lost_for_s": round(lost, 1), "losses": len(self.losses),
                         "reopens": self.reopens}}

    def expected_next(self, now: float) -> int:
        """The clock's estimate of the index one past the newest sample the device has taken by `now`."""
        if self.receiver.next_index is None:
            return 0
        return self.receiver.next_index + max(0, round((now - self._last_valid) * self.rate_hz))

    def events(self) -> Iterator[list[SampleBlock] | None]:
        """Blocks of each read with valid frames; None every `TICK_S` while the link is lost."""
        serial = import_optional("serial", what="reading ECG serial streams")
        start = last_tick = time.perf_counter()
        while not self.stop():
            data = b""
            if self.ser is None:
                self._try_reopen()
            else:
                try:
                    data = self.ser.read(max(1, self.ser.in_waiting))
                except (serial.SerialException, OSError) as exc:
                    self._port_gone(str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__)
            now = time.perf_counter()
            if data:
                if self.current is not None:
                    self.receiver.resume_after_loss(self.expected_next(now))
                blocks = self.receiver.feed(data, now)
                if blocks:
                    if self.current is not None:
                        self._end_loss(blocks[0].start, now, self.receiver.placed_by)
                    self._last_valid = now
                    yield blocks
                    continue
            if self.receiver.next_index is None:
                if now - start > self.silence_limit_s:
                    raise NoValidFramesError(f"no valid frames in {self.silence_limit_s:g} s: check --baud/--protocol "
                                             f"({self.receiver.stats.frames()['dropped']} frames dropped)")
                continue
            if self.current is None and now - self._last_valid > self.loss_after_s:
                self._begin_loss()
            if self.current is not None:
                if self.give_up_after_s is not None and now - self.current.began >= self.give_up_after_s:
                    self.gave_up = True
                    self._log(f"signal lost for {now - self.current.began:.1f} s: giving up "
                              f"(--give-up-after {self.give_up_after_s:g})")
                    return
                if now - last_tick >= TICK_S:
                    last_tick = now
                    yield None

    def finish(self, stop_index: int) -> None:
        """End an open loss at `stop_index` (the session ended while lost): the clock says how long it was."""
        if self.current is not None:
            self.receiver.mark_missing_until(stop_index)
            self._end_loss(stop_index, time.perf_counter(), "clock")

    def close(self) -> None:
        """Close the port if it is open."""
        if self.ser is not None:
            self.ser.close()
            self.ser = None

    def _begin_loss(self) -> None:
        assert self.receiver.next_index is not None
        self.current = LinkLoss(start=self.receiver.next_index, began=self._last_valid)
        self._log(f"signal lost at sample {self.current.start} (no valid frame for "
                  f"{time.perf_counter() - self._last_valid:.1f} s); reading on")

    def _end_loss(self, stop_index: int, now: float, length_from: str) -> None:
        loss = self.current
        assert loss is not None
        loss.seconds, loss.length, loss.length_from = now - loss.began, stop_index - loss.start, length_from
        self.losses.append(loss)
        self.current = None
        self._log(f"signal back: {loss.describe()}")

    def _port_gone(self, why: str) -> None:
        if self.receiver.next_index is None:  # never a valid frame: nothing to resume
            raise PortClosedError(f"serial port {self.port_name} closed before any valid frame ({why}); "
                                  "check the cable or device")
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a vanished device fails its close in many ways
            self.ser = None
        if self.current is None:
            self._begin_loss()
        self._log(f"serial port {self.port_name} went away ({why}); reopening")
        self._backoff = BACKOFF_S[0]
        self._next_attempt = time.perf_counter() + self._backoff

    def _try_reopen(self) -> None:
        wait = self._next_attempt - time.perf_counter()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            return
        try:
            self.ser = self._reopen()
        except DataError:
            self._backoff = min(self._backoff * 2, BACKOFF_S[1])
            self._next_attempt = time.perf_counter() + self._backoff
            return
        self.reopens += 1
        if self.current is not None:
            self.current.reopens += 1
        self._log(f"serial port {self.port_name} reopened")

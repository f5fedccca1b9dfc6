"""The live strip's sweep: drawn `FPS` times a second, its right edge moving at the sample rate.

Reconstructed samples arrive a hop at a time; drawing each chunk as it comes makes the strip jump
by a hop (a quarter second at ``--hop 0.25``).  `StripSweep` keeps the newest samples and shows
them up to a display position that advances continuously at the sample rate, about one hop behind
the newest reconstructed sample: the trace scrolls smoothly, like a bedside monitor's.  The first
chunk is shown at once; the display then settles one hop behind.  When it
falls more than two hops behind (a burst after a stall) it jumps to one hop behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

FPS = 25.0


class StripSweep:
    """The newest `seconds` of 12-lead output plus the hop not yet shown; `frame(now)` draws it."""

    def __init__(self, leads: int, rate_hz: float, hop_n: int, seconds: float) -> None:
        self.rate_hz, self.hop_n = rate_hz, hop_n
        self.view_n = int(seconds * rate_hz)
        self.values = np.full((leads, self.view_n + 2 * hop_n), np.nan)
        self.end: int | None = None  # absolute index one past the newest sample held
        self.flagged = False
        self._base = 0.0  # display position (absolute sample index) at time `_t0`
        self._t0 = 0.0
        self._lock = threading.Lock()

    def shown(self, now: float) -> float:
        """Absolute sample index at the right edge of the strip at time `now`."""
        if self.end is None:
            return 0.0
        return min(float(self.end), self._base + (now - self._t0) * self.rate_hz)

    def add(self, start: int, values: np.ndarray, flagged: bool, now: float) -> None:
        """Take reconstructed samples [start, start + len(values)) ((n, leads) mV)."""
        with self._lock:
            n = len(values)
            end = start + n
            pos = self.shown(now) if self.end is not None else float(end)  # the first chunk at once
            shift = n if self.end is None else end - self.end
            buf = self.values
            if shift >= buf.shape[1]:
                buf[:] = np.nan
            elif shift > 0:
                buf[:, :-shift] = buf[:, shift:].copy()
                buf[:, -shift:] = np.nan
            take = min(n, buf.shape[1])
            buf[:, -take:] = values[-take:].T  # the chunk ends at the buffer's right edge
            self.end, self.flagged = end, flagged
            self._base, self._t0 = max(pos, end - 2.0 * self.hop_n), now

    def window(self, now: float) -> np.ndarray | None:
        """(leads, view_n) mV ending at the display position (None before the first samples)."""
        with self._lock:
            if self.end is None:
                return None
            lag = int(self.end - self.shown(now))  # samples held but not shown yet
            right = self.values.shape[1] - lag
            return self.values[:, max(0, right - self.view_n):right].copy()


def run_ticker(sweep: StripSweep, publish: Callable[[np.ndarray, bool], None], stop: threading.Event,
               paused_until: list[float]) -> threading.Thread:
    """Start a daemon thread calling `publish(window, flagged)` `FPS` times a second until `stop`
    (skipped while `time.perf_counter() < paused_until[0]`, e.g. while a lost link is drawn)."""
    def loop() -> None:
        period = 1.0 / FPS
        while not stop.wait(period):
            now = time.perf_counter()
            if now < paused_until[0]:
                continue
            image = sweep.window(now)
            if image is not None:
                publish(image, sweep.flagged)

    thread = threading.Thread(target=loop, name="ecg-strip-sweep", daemon=True)
    thread.start()
    return thread

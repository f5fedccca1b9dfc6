"""What a live session keeps: the received leads, the reconstructed 12 leads, and ``--record`` on disk.

`RawRecording` holds the three leads exactly as received, `OutputRecording` the reconstructed
chunks.  `SessionRecord` writes both as WFDB records (``OUT`` and ``OUT_12lead``) that grow during
the session: every `CHECKPOINT_S` seconds the samples since the last checkpoint are appended and
the headers committed (`medge.apps.ecg.io_wfdb.GrowingRecord`), so a session killed at any moment
(``kill -9``, power loss) leaves valid records holding everything up to the last checkpoint.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_right

import numpy as np

from medge.apps.ecg.io_wfdb import GrowingRecord
from medge.apps.ecg.protocol import LEADS
from medge.apps.ecg.provenance import Provenance
from medge.apps.ecg.reconstruct import STANDARD_LEADS, OutputChunk
from medge.apps.ecg.serial_reader import SampleBlock

CHECKPOINT_S = 2.0


class RawRecording:
    """The three received leads, exactly as received (µV), NaN where missing.

    Appended by the capture thread, read by the record sink: a reader sees a consistent prefix.
    """

    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self._stops: list[int] = []  # appended after the block: len(_stops) blocks are complete

    def add(self, block: SampleBlock) -> None:
        """Keep one block."""
        self.blocks.append(block)
        self._stops.append(block.stop)

    def span(self) -> tuple[int, int] | None:
        """(first index, one past the last index) or None when empty."""
        n = len(self._stops)
        return (self.blocks[0].start, self._stops[n - 1]) if n else None

    def array_uv(self, stop: int | None = None, start: int | None = None) -> np.ndarray:
        """(3, N) µV from `start` (default the first received sample) to the last received sample
        (or to `stop`), NaN in gaps."""
        span = self.span()
        if span is None:
            return np.zeros((len(LEADS), 0))
        a = span[0] if start is None else start
        b = max(span[1], stop or 0)
        out = np.full((len(LEADS), max(0, b - a)), np.nan)
        n = len(self._stops)
        for k in range(bisect_right(self._stops, a, hi=n), n):
            block = self.blocks[k]
            if block.start >= b:
                break
            lo, hi = max(block.start, a), min(block.stop, b)
            out[:, lo - a:hi - a] = block.values_uv[lo - block.start:hi - block.start].T
        return out


class OutputRecording:
    """Reconstructed chunks (contiguous, each final when added), assembled into (12, N)."""

    def __init__(self) -> None:
        self.chunks: list[OutputChunk] = []
        self.flagged = 0

    def add(self, chunk: OutputChunk) -> None:
        """Keep one chunk."""
        self.chunks.append(chunk)
        self.flagged += chunk.flagged

    @property
    def end(self) -> int | None:
        """One past the newest reconstructed sample (None before the first chunk)."""
        return self.chunks[-1].start + len(self.chunks[-1].values_mv) if self.chunks else None

    def array_mv(self, first: int, length: int) -> np.ndarray:
        """(12, length) mV from absolute index `first`; NaN where nothing was reconstructed."""
        out = np.full((len(STANDARD_LEADS), length), np.nan)
        for c in reversed(self.chunks):  # newest first: a checkpoint reads only the last few chunks
            a, b = max(c.start, first), min(c.start + len(c.values_mv), first + length)
            if b > a:
                out[:, a - first:b - first] = c.values_mv[a - c.start:b - c.start].T
            if c.start + len(c.values_mv) <= first:
                break
        return out


class SessionRecord:
    """``--record OUT``: WFDB records OUT (II, V1, V5 as received) and OUT_12lead, checkpointed."""

    def __init__(self, path: str | os.PathLike, rate_hz: float, provenance: Provenance,
                 interval_s: float = CHECKPOINT_S) -> None:
        self.path, self.provenance, self.interval_s = str(path), provenance, interval_s
        self.raw = GrowingRecord(path, LEADS, rate_hz)
        self.twelve = GrowingRecord(f"{path}_12lead", STANDARD_LEADS, rate_hz)
        self.checkpoints = 0
        self._last = time.perf_counter()
        self._lock = threading.Lock()  # the record sink checkpoints; the main thread writes the last one

    def due(self) -> bool:
        """Whether `interval_s` passed since the last checkpoint."""
        return time.perf_counter() - self._last >= self.interval_s

    def checkpoint(self, raw: RawRecording, output: OutputRecording, gaps: int, stop: int | None = None) -> bool:
        """Append what arrived since the last checkpoint and commit both records.

        The 12-lead record follows the reconstruction (a hop behind); `stop` (the session's end,
        gaps included) is given once at the end: both records then run to it.  False while nothing
        was received yet.
        """
        with self._lock:
            span = raw.span()
            if span is None:
                return False
            first = span[0]
            end = max(span[1], stop or 0)
            note = [f"medge ecg stream; first_sample_index {first}; gaps {gaps}"]
            self.raw.append(raw.array_uv(end, start=first + self.raw.samples) / 1000.0, note)
            done = end if stop is not None else min(end, output.end or first)
            start = first + self.twelve.samples
            self.twelve.append(output.array_mv(start, max(0, done - start)), note + self.provenance.comments())
            self.checkpoints += 1
            self._last = time.perf_counter()
            return True

    def close(self) -> None:
        """Close the data files."""
        self.raw.close()
        self.twelve.close()

    def written(self) -> dict[str, str]:
        """The report's ``record`` block (empty when nothing was written)."""
        if not self.checkpoints:
            return {}
        return {"raw": self.path, "twelve_lead": f"{self.path}_12lead"}

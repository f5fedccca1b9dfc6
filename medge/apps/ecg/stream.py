"""The live app: serial port → receiver → filters → 12-lead reconstruction → record / view / plot.

Built on `medge.apps.pipeline`.  The capture thread (the pipeline's source) drains the port
through link losses (`medge.apps.ecg.link`), applies the receiver rules, keeps the raw recording,
filters every block and appends it to the input window; it never waits for the model.  While the
link is lost it tells the view how long ("signal lost for N s"), and a session that ends during a
loss records the missing tail as a gap, its length from the clock.  Every hop it hands a snapshot of the window to the
``reconstruct`` stage through a latest-wins slot (a late model skips a snapshot, never queues
one; the next snapshot still covers every new sample).  A lossless ``record`` sink keeps every
output chunk and checkpoints ``--record`` to disk every few seconds (`medge.apps.ecg.recording`);
a lossy ``view`` sink hands chunks to the live strip, which a ticker draws 25 times a second,
sweeping at the sample rate (`medge.apps.ecg.sweep`), for the browser view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medge.apps.ecg.filters import StreamFilter
from medge.apps.ecg.protocol import LEADS
from medge.apps.ecg.reconstruct import (
    DERIVED_LEADS,
    STANDARD_LEADS,
    InputWindow,
    LeadModel,
    OutputChunk,
    StreamingReconstructor,
)
from medge.apps.ecg.link import LinkReader
from medge.apps.ecg.recording import OutputRecording, RawRecording, SessionRecord
from medge.apps.ecg.serial_reader import Receiver
from medge.apps.ecg.sweep import StripSweep, run_ticker
from medge.apps.pipeline import LatencyHistogram, Pipeline, Sink, Stage, clock
from medge.common.errors import DataError
from medge.apps.ecg.plot import live_strip
from medge.apps.view import encode_jpeg

WARMUP_HOPS = 2
VIEW_SECONDS = 5.0


@dataclass
class StreamConfig:
    """Everything `stream` needs besides the open port and model."""

    rate_hz: float
    hop_s: float = 1.0
    mains_hz: float | None = None
    seconds: float | None = None
    give_up_after_s: float | None = None


class Capture:
    """The pipeline's source: drains the link and yields a `WindowSnapshot` every hop.

    `on_lost(seconds, expected_end)` is called every few hundred ms while the link is lost.
    """

    def __init__(self, link: LinkReader, receiver: Receiver, model: LeadModel, config: StreamConfig,
                 on_lost: Callable[[float, int], None] | None = None) -> None:
        self.link, self.receiver, self.config, self.on_lost = link, receiver, config, on_lost
        self.raw = RawRecording()
        self.filter = StreamFilter(len(LEADS), config.rate_hz, config.mains_hz)
        window_n = round(model.samples * config.rate_hz / model.rate_hz)
        self.window = InputWindow(window_n, max(1, round(config.hop_s * config.rate_hz)))
        self._order = [LEADS.index(lead) for lead in model.input_leads]
        self.error: DataError | None = None
        self.end_index: int | None = None  # one past the last sample of the recording, gaps included

    def _limit(self) -> int | None:
        first = self.receiver.first_index
        if self.config.seconds is None or first is None:
            return None
        return first + int(np.ceil(self.config.seconds * self.config.rate_hz))

    def __iter__(self):
        try:
            for blocks in self.link.events():
                if blocks is None:  # the link is lost: the clock moves on
                    now = time.perf_counter()
                    if self.on_lost is not None:
                        self.on_lost(self.link.lost_for(now), self.link.expected_next(now))
                    limit = self._limit()
                    if limit is not None and self.link.expected_next(now) >= limit:
                        break
                    continue
                for block in blocks:  # the whole read, so that the recording matches the receiver's counts
                    if self.raw.blocks and block.start > self.raw.blocks[-1].stop:
                        self.filter.reset()  # a gap: restart the filters at the next valid sample
                    self.raw.add(block)
                    filtered_mv = self.filter.process(block.values_uv / 1000.0)
                    self.window.push(block.start, filtered_mv[:, self._order], block.arrival)
                    if self.window.hop_ready():
                        yield self.window.snapshot()
                limit = self._limit()
                if limit is not None and (self.receiver.next_index or 0) >= limit:
                    break
        except DataError as exc:  # port closed / no valid frames before any frame: end, keep the recording
            self.error = exc
        if self.link.current is not None and self.receiver.next_index is not None:
            end = self.link.expected_next(time.perf_counter())
            limit = self._limit()
            self.link.finish(max(self.receiver.next_index, min(end, limit) if limit is not None else end))
        self.end_index = self.receiver.next_index
        self.receiver.finish()

    def close(self) -> None:
        """Close the serial port (runs in the capture thread when the source ends)."""
        self.link.close()


@dataclass
class StreamResult:
    """What a finished stream hands back to the command."""

    raw_uv: np.ndarray
    twelve_mv: np.ndarray
    first_index: int | None
    latency_ms: dict[str, Any]
    reconstruct_ms: dict[str, Any]
    windows: dict[str, int]
    pipeline: dict[str, Any]
    error: DataError | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    link: LinkReader | None = None


def run_stream(ser, receiver: Receiver, model: LeadModel, config: StreamConfig, *, reopen: Callable[[], object],
               view=None, record: SessionRecord | None = None,
               log: Callable[[str], None] = lambda _msg: None) -> StreamResult:
    """Stream until --seconds of samples (the clock counts them while the link is lost), SIGINT/SIGTERM,
    --give-up-after of one continuous loss, or no valid frame since the start; return everything.

    `reopen()` opens the port again after it vanished (`DataError` while it is still gone).
    `record` is checkpointed while the session runs and completed at its end.
    """
    recon = StreamingReconstructor(model, config.rate_hz, config.hop_s)
    output = OutputRecording()
    latency, rec_ms = LatencyHistogram(), LatencyHistogram()
    hops = {"n": 0}
    sweep = StripSweep(len(STANDARD_LEADS), config.rate_hz, recon.hop_n, VIEW_SECONDS)
    paused_until = [0.0]  # the sweep pauses while the capture thread draws a lost link

    def reconstruct(item) -> OutputChunk:
        chunk = recon.step(item.data)
        done = clock()
        hops["n"] += 1
        if hops["n"] > WARMUP_HOPS:
            rec_ms.add(chunk.reconstruct_ms)
            if chunk.arrival is not None:
                for t in chunk.arrival[np.isfinite(chunk.arrival)][::5]:  # every 5th sample bounds the histogram cost
                    latency.add((done - t) * 1e3)
        return chunk

    def show(item) -> None:
        chunk: OutputChunk = item.data
        sweep.add(chunk.start, chunk.values_mv, chunk.flagged, time.perf_counter())

    def draw(image: np.ndarray, flagged: bool) -> None:
        view.publish(lambda: encode_jpeg(live_strip(STANDARD_LEADS, image, config.rate_hz, flagged=flagged)))

    def lost(seconds: float, expected_end: int) -> None:
        paused_until[0] = time.perf_counter() + 1.0
        image, end = sweep.window(time.perf_counter()), sweep.end
        if image is None:
            image = np.full((len(STANDARD_LEADS), sweep.view_n), np.nan)
        if end is not None:
            _scroll(image, expected_end - end)  # the strip moves on with the clock, blank
        view.publish(encode_jpeg(live_strip(STANDARD_LEADS, image, config.rate_hz,
                                            banner=f"SIGNAL LOST FOR {seconds:.0f} s")))

    link = LinkReader(ser, receiver, config.rate_hz, reopen=reopen, give_up_after_s=config.give_up_after_s, log=log)
    capture = Capture(link, receiver, model, config, on_lost=lost if view is not None else None)

    def keep(item) -> None:
        output.add(item.data)
        if record is not None and record.due():
            record.checkpoint(capture.raw, output, len(receiver.stats.gaps))

    sinks = [Sink("record", keep, lossless=True)]
    if view is not None:
        sinks.append(Sink("view", show))
    pipe = Pipeline(capture, [Stage("reconstruct", reconstruct)], sinks, warmup=WARMUP_HOPS, source_name="capture")
    link.stop = pipe.stop_event.is_set  # SIGINT/SIGTERM stop the port reader too
    ticker_stop = threading.Event()
    if view is not None:
        view.set_stats(lambda: live_stats(link, receiver, pipe.stats(), hops["n"], output.flagged))
        run_ticker(sweep, draw, ticker_stop, paused_until)
    try:
        stats = pipe.run()
    finally:
        ticker_stop.set()
    window = capture.window
    if recon.end is not None and window.end > recon.end:
        # the samples after the last reconstructed window (a partial hop at the stop, or a last
        # snapshot the latest-wins slot skipped under load): one final window covers them
        output.add(recon.step(window.snapshot()))
        hops["n"] += 1
    tail = recon.flush()
    if tail is not None:
        output.add(tail)
    if record is not None:
        record.checkpoint(capture.raw, output, len(receiver.stats.gaps), stop=capture.end_index)
    raw = capture.raw.array_uv(capture.end_index)
    first = capture.raw.span()[0] if capture.raw.span() else None
    twelve = output.array_mv(first, raw.shape[1]) if first is not None else np.zeros((12, 0))
    windows = {"reconstructed": hops["n"], "flagged": output.flagged,
               "skipped": int(stats["drops"].get("capture->reconstruct", 0)), "skipped_samples": recon.skipped_samples}
    return StreamResult(raw, twelve, first, latency.summary(), rec_ms.summary(), windows, stats, capture.error,
                        {"derived_leads": list(DERIVED_LEADS) if model.derive_limb_leads else []}, link)


def live_stats(link: LinkReader, receiver: Receiver, pipeline: dict[str, Any], windows: int,
               flagged: int) -> dict[str, Any]:
    """The browser view's stats, with the ECG page's own ``summary`` line."""
    now = time.perf_counter()
    status, st = link.status(now), receiver.stats
    frames = st.frames()
    missing_s = st.missing / link.rate_hz
    state = f"SIGNAL LOST for {link.lost_for(now):.0f} s" if link.current is not None else "link ok"
    summary = (f"{state} · frames ok {frames['ok']}, dropped {frames['dropped']} (CRC {frames['crc_error']}) · "
               f"samples {st.received}, gaps {len(st.gaps)} ({missing_s:.1f} s missing) · "
               f"12-lead windows {windows} ({flagged} touch a gap) · computed leads, not for diagnosis")
    if pipeline.get("running") is False:
        summary += " · stopped"
    return {**status, "summary": summary, "frames": frames, "gaps": len(st.gaps),
            "missing_s": round(missing_s, 3), "windows": {"reconstructed": windows, "flagged": flagged},
            "pipeline": pipeline}


def _scroll(buf: np.ndarray, shift: int) -> None:
    """Move a (leads, N) strip `shift` samples to the left in place, blank (NaN) on the right."""
    if shift >= buf.shape[1]:
        buf[:] = np.nan
    elif shift > 0:
        buf[:, :-shift] = buf[:, shift:].copy()
        buf[:, -shift:] = np.nan

"""Serial port → sample blocks, with the receiver rules of docs/ecg-protocol.md.

`Receiver` turns bytes into `SampleBlock` objects for either protocol: gaps come from the frame's
sample index (the Cyton's 8-bit counter), missing samples stay missing (the block after a gap
starts later; nothing is filled in), no sample of a damaged frame is ever emitted, and a lead-off
flag blanks that lead (NaN).  After a lost link (`Receiver.resume_after_loss`) the first frame is
placed by its counter where the counter can tell (medge's 32-bit index moving forward), else by
the clock (a patch that restarted its counter; the Cyton's counter wrapped during the loss).
`open_port` opens a pyserial port or URL (``socket://``, ``loop://``); `medge.apps.ecg.link`
drains it through link losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medge.apps.ecg import cyton
from medge.apps.ecg.protocol import (
    FLAG_LOW_BATTERY,
    FLAG_SATURATION,
    LEADS,
    FrameDecoder,
)
from medge.common.errors import DataError, UsageError
from medge.common.registry import import_optional

PROTOCOLS = ("medge", "openbci-cyton")
MEDGE_RATE_HZ = 500


class PortClosedError(DataError):
    """The serial port went away while streaming."""


class NoValidFramesError(DataError):
    """Bytes (or nothing) arrive but no frame passes the checks."""


@dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples of the three leads, as received."""

    start: int  # absolute sample index (unwrapped) of the first sample
    values_uv: np.ndarray  # (n, 3) float64, NaN where a lead is off
    arrival: float  # time.perf_counter() (the pipeline clock) when the bytes were read

    @property
    def stop(self) -> int:
        """Index one past the last sample."""
        return self.start + len(self.values_uv)


@dataclass
class ReceiverStats:
    """Counts the report shows: frames, samples, gaps, lead-off runs, device flags."""

    ok: int = 0
    crc_error: int = 0
    bad_length: int = 0
    bad_version: int = 0
    out_of_order: int = 0
    received: int = 0
    missing: int = 0
    gaps: list[dict[str, int]] = field(default_factory=list)
    lead_off: list[dict[str, Any]] = field(default_factory=list)
    saturation_frames: int = 0
    low_battery_frames: int = 0

    def frames(self) -> dict[str, int]:
        """The ``frames`` block of the report."""
        dropped = self.crc_error + self.bad_length + self.bad_version + self.out_of_order
        return {"ok": self.ok, "crc_error": self.crc_error, "bad_length": self.bad_length,
                "bad_version": self.bad_version, "out_of_order": self.out_of_order, "dropped": dropped}


class Receiver:
    """Bytes → `SampleBlock` list for one protocol, keeping gap and lead-off accounting."""

    def __init__(self, protocol: str = "medge", channel_map: dict[str, int] | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise UsageError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.channel_map = channel_map or dict(cyton.DEFAULT_CHANNEL_MAP)
        self.stats = ReceiverStats()
        self._medge = FrameDecoder()
        self._cyton = cyton.CytonDecoder()
        self.first_index: int | None = None
        self._next: int | None = None  # absolute index expected next
        self._lead_off_start: list[int | None] = [None, None, None]
        self._offset = 0  # added to device indices (mod the counter) once a restarted counter is re-anchored
        self._resume_estimate: int | None = None  # clock estimate of the next index after a lost link
        self.placed_by = "counter"  # how the first frame after the last lost link was placed

    @property
    def next_index(self) -> int | None:
        """Absolute index one past the newest sample received (None before the first frame)."""
        return self._next

    def feed(self, data: bytes, arrival: float) -> list[SampleBlock]:
        """Decode `data`; return the blocks it completes (possibly none)."""
        if self.protocol == "medge":
            blocks = []
            for frame in self._medge.feed(data):
                block = self._place(frame.first_sample_index, 1 << 32, frame.samples_uv.astype(np.float64),
                                    frame.lead_off, arrival)
                if block is not None:
                    self.stats.saturation_frames += bool(frame.flags & FLAG_SATURATION)
                    self.stats.low_battery_frames += bool(frame.flags & FLAG_LOW_BATTERY)
                    blocks.append(block)
            c = self._medge.counts
            self.stats.ok, self.stats.crc_error = c.ok - self.stats.out_of_order, c.crc_error
            self.stats.bad_length, self.stats.bad_version = c.bad_length, c.bad_version
            return blocks
        blocks = []
        order = [self.channel_map[lead] - 1 for lead in LEADS]
        for packet in self._cyton.feed(data):
            values = packet.channels_uv[order][None, :]
            block = self._place(packet.counter, 256, values, (False, False, False), arrival)
            if block is not None:
                blocks.append(block)
        self.stats.ok, self.stats.crc_error = self._cyton.counts.ok, self._cyton.counts.bad_footer
        return blocks

    def _place(self, index: int, modulus: int, values: np.ndarray, lead_off: tuple[bool, ...],
               arrival: float) -> SampleBlock | None:
        n = len(values)
        if self._next is None:
            start = index
            self.first_index = start
        else:
            delta = (index + self._offset - self._next) % modulus
            if self._resume_estimate is not None:
                delta = self._resume_delta(delta, modulus, self._resume_estimate - n)
            elif self.protocol == "medge" and delta >= modulus // 2:  # older than what we have: duplicate
                self.stats.out_of_order += 1
                return None
            start = self._next + delta
            self._add_gap(delta)
        values = values.copy()
        for lead, off in enumerate(lead_off):
            if off:
                values[:, lead] = np.nan
                if self._lead_off_start[lead] is None:
                    self._lead_off_start[lead] = start
            elif self._lead_off_start[lead] is not None:
                self._close_lead_off(lead, start)
        self._next = start + n
        self.stats.received += n
        return SampleBlock(int(start), values, arrival)

    def resume_after_loss(self, expected_next: int) -> None:
        """The link was lost: place the next frame by its counter where it can tell, else near `expected_next`.

        `expected_next` is the clock's estimate of the index one past the newest sample arriving now.
        """
        self._resume_estimate = expected_next

    def _resume_delta(self, delta: int, modulus: int, estimate: int) -> int:
        """The gap before the first frame after a lost link (`estimate`: the clock's guess of its index)."""
        self._resume_estimate = None
        guess = max(0, estimate - (self._next or 0))
        if self.protocol == "medge":
            if delta < modulus // 2:  # the counter moved on: it says exactly how many samples were lost
                self.placed_by = "counter"
                return delta
            self.placed_by = "clock"  # the patch restarted its counter: re-anchor it where the clock says
            self._offset = (self._offset + guess - delta) % modulus
            return guess
        wraps = max(0, round((guess - delta) / modulus))  # the Cyton's 8-bit counter: the clock counts the wraps
        self.placed_by = "counter+clock" if wraps else "counter"
        return delta + wraps * modulus

    def _add_gap(self, length: int) -> None:
        if length > 0 and self._next is not None:
            self.stats.gaps.append({"start": int(self._next), "length": int(length)})
            self.stats.missing += int(length)

    def mark_missing_until(self, stop: int) -> None:
        """Record the samples from the newest one received up to `stop` as a gap (the stream ended while lost)."""
        if self._next is not None and stop > self._next:
            self._add_gap(stop - self._next)
            for lead in range(len(LEADS)):
                self._close_lead_off(lead, self._next)
            self._next = stop

    def _close_lead_off(self, lead: int, stop: int) -> None:
        begin = self._lead_off_start[lead]
        if begin is not None:
            self.stats.lead_off.append({"lead": LEADS[lead], "start": int(begin), "length": int(stop - begin)})
        self._lead_off_start[lead] = None

    def finish(self) -> None:
        """Close open lead-off runs at the end of the stream."""
        for lead in range(len(LEADS)):
            if self._next is not None:
                self._close_lead_off(lead, self._next)


def default_rate(protocol: str) -> int:
    """The device sample rate each protocol implies unless --sample-rate says otherwise."""
    return cyton.DEFAULT_RATE_HZ if protocol == "openbci-cyton" else MEDGE_RATE_HZ


def open_port(port: str, baud: int, timeout: float = 0.05):
    """Open a serial device or pyserial URL for reading; one-line error when it cannot be opened."""
    serial = import_optional("serial", what="reading ECG serial streams")
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise DataError(f"cannot open serial port {port}: {str(exc).splitlines()[0]}; "
                        "check the device path (e.g. /dev/ttyACM0) or URL (socket://HOST:PORT)") from None

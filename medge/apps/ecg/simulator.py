"""A wearable-patch simulator: leads II, V1, V5 as frames on a serial port.

The port is a pyserial device/URL, or ``pty:LINK``: the simulator opens a pty pair itself
(``os.openpty``), puts it in raw mode, links the device end to LINK (``/dev/pts/N`` → LINK) and
writes to the other end, exactly like a USB-CDC device appearing on the host.  With
``--corrupt-rate`` each byte on the wire is damaged with that probability, with ``--drop-rate``
whole frames are never sent.  The ground truth (`GroundTruth`) records every sample and which of
them a correct receiver must deliver: a frame arrives intact only when it was sent, none of its
bytes (delimiter included) was damaged and the delimiter before it was intact (otherwise the two
frames merge into one bad frame).

`Faults` injects link losses: ``--silence-at T --silence-for S`` sends nothing for S s of signal
(the patch keeps counting samples; a replay pauses S s of wall time), ``--reopen-at T`` waits until
the host has read every byte, closes the pty, and creates it again at the same path (a USB device
re-enumerating): the samples taken while the link was down are never sent.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medge.apps.ecg import cyton
from medge.apps.ecg.protocol import encode_frame
from medge.common.errors import DataError, UsageError
from medge.common.fileio import atomic_path
from medge.common.registry import import_optional

FRAME_SAMPLES = 10
WRITE_TIMEOUT_S = 2.0  # a real-time device buffers this long for a host that does not read
REPLAY_WRITE_TIMEOUT_S = 10.0  # a replay as fast as the host reads waits for a busy host
READER_TIMEOUT_S = 30.0
READER_SETTLE_S = 0.3  # the host flushes its input buffer right after opening the port (pyserial does)
REOPEN_SETTLE_S = 1.0  # the same after a reopen, with more margin: a lost frame there would be counted as delivered
HANGUP_DELAY_S = 2.0  # keep the line up briefly after the last frame so that readers drain it
REOPEN_DOWN_S = 0.5  # --reopen-at: how long the device stays away before it appears again
DRAIN_TIMEOUT_S = 5.0  # --reopen-at: how long to wait for the host to read what was sent
DRAIN_QUIET_S = 0.3  # --reopen-at: how long the host's input queue must stay empty before the hang-up


@dataclass(frozen=True)
class Faults:
    """Link losses to inject, in seconds of signal."""

    silence_at: float | None = None
    silence_for: float = 0.0
    reopen_at: float | None = None

    def silenced(self, t: float) -> bool:
        """Whether a frame starting at `t` s falls in the silence."""
        return self.silence_at is not None and self.silence_at <= t < self.silence_at + self.silence_for


@dataclass
class GroundTruth:
    """What the simulator sent: samples in µV and, per sample, whether it must be delivered."""

    rate_hz: int
    samples_uv: np.ndarray  # (N, 3) int32 (medge) / float64 (cyton, exact µV of the counts)
    delivered: np.ndarray  # (N,) bool
    frames_sent: int = 0
    frames_dropped: int = 0
    frames_damaged: int = 0
    frames_overflow: int = 0
    bytes_corrupted: int = 0
    frames_silenced: int = 0  # never sent: in a --silence-at window or while the device was reopening
    reopens: int = 0
    host_disconnected: bool = False

    def save(self, path: str | os.PathLike) -> None:
        """Write the ground truth as an NPZ, atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, rate_hz=self.rate_hz, samples_uv=self.samples_uv, delivered=self.delivered,
                     frames_sent=self.frames_sent, frames_dropped=self.frames_dropped,
                     frames_damaged=self.frames_damaged, frames_overflow=self.frames_overflow,
                     bytes_corrupted=self.bytes_corrupted, frames_silenced=self.frames_silenced,
                     reopens=self.reopens)


class PtyPort:
    """The device end of a pty pair, linked at a path for the host side to open.

    Like a USB-CDC device that waits for the host to assert DTR, the simulator starts sending when
    a reader opens the link, and stops when the reader goes away (the pty master then sees POLLHUP).
    """

    def __init__(self, link: str, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.write_timeout_s = write_timeout_s
        self.link = Path(link)
        self._open()

    def _open(self) -> None:
        import tty

        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass unchanged (kept by the pty)
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        self._poll = select.poll()
        self._poll.register(self.master, select.POLLOUT | select.POLLHUP)
        if self.link.is_symlink() or self.link.exists():
            self.link.unlink()
        self.link.symlink_to(self.slave_name)
        self.host_gone = False

    def reopen(self, down_s: float = REOPEN_DOWN_S) -> None:
        """Wait until the host has read everything, hang up, and appear again at the same path after `down_s`."""
        self.drain()
        self.close()
        time.sleep(down_s)
        self._open()

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S, quiet_s: float = DRAIN_QUIET_S) -> None:
        """Wait until the host's input queue stays empty for `quiet_s` (so a hang-up loses no byte that was sent).

        FIONREAD counts the line discipline's buffer only; bytes the kernel has not moved there yet
        (its flip buffer) are not counted, hence an empty queue must last a while, not be seen once.
        """
        fd = os.open(self.slave_name, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            deadline = time.monotonic() + timeout_s
            quiet_since = None
            while time.monotonic() < deadline:
                queued = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
                now = time.monotonic()
                quiet_since = (quiet_since or now) if queued == 0 else None
                if quiet_since is not None and now - quiet_since >= quiet_s:
                    return
                time.sleep(0.01)
        finally:
            os.close(fd)

    def _events(self, timeout_s: float) -> int:
        return sum(ev for _, ev in self._poll.poll(int(timeout_s * 1000)))

    def wait_for_reader(self, timeout_s: float = READER_TIMEOUT_S, settle_s: float = READER_SETTLE_S) -> None:
        """Block until a host opens the link (then `settle_s` for its flush); `DataError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self._events(0) & select.POLLHUP:
            if time.monotonic() > deadline:
                raise DataError(f"no reader opened {self.link} within {timeout_s:g} s; start 'medge ecg stream "
                                f"--port {self.link}' while the simulator runs")
            time.sleep(0.02)
        time.sleep(settle_s)

    def write(self, data: bytes) -> int:
        """Write `data`; returns the bytes written, fewer when the host stops reading or goes away."""
        view = memoryview(data)
        deadline = time.monotonic() + self.write_timeout_s
        while view and not self.host_gone:
            events = self._events(max(0.0, deadline - time.monotonic()))
            if events & select.POLLHUP:
                self.host_gone = True
                break
            if not events & select.POLLOUT:
                break
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                continue
            except OSError:  # EIO: the host closed the port
                self.host_gone = True
        return len(data) - len(view)

    def close(self) -> None:
        """Hang up: close the device end and remove the link."""
        os.close(self.master)
        if self.link.is_symlink():
            self.link.unlink()


class SerialPort:
    """A pyserial device or URL as the simulator's output."""

    def __init__(self, url: str, baud: int, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        serial = import_optional("serial", what="writing ECG serial streams")
        try:
            self._ser = serial.serial_for_url(url, baudrate=baud, write_timeout=write_timeout_s)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise DataError(f"cannot open serial port {url}: {str(exc).splitlines()[0]}") from None
        self._timeout = serial.SerialTimeoutException
        self.host_gone = False

    def wait_for_reader(self, timeout_s: float = READER_TIMEOUT_S) -> None:
        """A serial device or URL is sent to at once (there is no reader to wait for)."""

    def write(self, data: bytes) -> int:
        """Write `data`; returns the bytes written (0 on a write timeout)."""
        try:
            return int(self._ser.write(data) or len(data))
        except self._timeout:
            return 0

    def close(self) -> None:
        """Close the port."""
        self._ser.close()


def open_output(port: str, baud: int, realtime: bool = True) -> PtyPort | SerialPort:
    """``pty:LINK`` → a new pty pair linked at LINK; anything else → pyserial."""
    timeout = WRITE_TIMEOUT_S if realtime else REPLAY_WRITE_TIMEOUT_S
    if port.startswith("pty:"):
        if not port[4:]:
            raise UsageError("--port pty:LINK needs a link path, e.g. pty:/tmp/ecg-patch")
        return PtyPort(port[4:], timeout)
    return SerialPort(port, baud, timeout)


def _corrupt(data: bytes, rate: float, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Damage each byte with probability `rate` (XOR with a random non-zero byte)."""
    hit = rng.random(len(data)) < rate
    if not hit.any():
        return data, hit
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    arr[hit] ^= rng.integers(1, 256, int(hit.sum()), dtype=np.uint8)
    return arr.tobytes(), hit


def simulate(out: PtyPort | SerialPort, samples_uv: np.ndarray, *, rate_hz: int, protocol: str = "medge",
             realtime: bool = False, corrupt_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 0,
             channel_map: dict[str, int] | None = None, progress=None, faults: Faults = Faults()) -> GroundTruth:
    """Send (N, 3) µV samples as frames (medge) or packets (Cyton), with `faults`; return the ground truth."""
    if not 0 <= corrupt_rate < 1 or not 0 <= drop_rate < 1:
        raise UsageError("--corrupt-rate and --drop-rate are probabilities in [0, 1)")
    if faults.reopen_at is not None and not isinstance(out, PtyPort):
        raise UsageError("--reopen-at recreates a pty; use it with --port pty:LINK")
    rng = np.random.default_rng(seed + 7919)
    n_total = len(samples_uv)
    per_frame = FRAME_SAMPLES if protocol == "medge" else 1
    truth = GroundTruth(rate_hz, samples_uv, np.zeros(n_total, dtype=bool))
    if protocol == "openbci-cyton":
        mapping = channel_map or dict(cyton.DEFAULT_CHANNEL_MAP)
        order = [mapping[lead] - 1 for lead in ("II", "V1", "V5")]
        counts = np.round(samples_uv / cyton.UV_PER_COUNT)
        truth.samples_uv = counts * cyton.UV_PER_COUNT  # what the counts on the wire mean exactly
    out.wait_for_reader()
    out.write(b"\x00" if protocol == "medge" else b"")
    prev_delimiter_ok = True
    t0 = time.monotonic()
    paused, resume_at = False, 0.0
    for k, start in enumerate(range(0, n_total, per_frame)):
        stop = min(start + per_frame, n_total)
        t = start / rate_hz
        if faults.reopen_at is not None and t >= faults.reopen_at and not truth.reopens and isinstance(out, PtyPort):
            out.reopen()
            truth.reopens += 1
            out.wait_for_reader(settle_s=REOPEN_SETTLE_S)
            out.write(b"\x00" if protocol == "medge" else b"")  # a fresh link starts at a delimiter
            prev_delimiter_ok = True
            resume_at = (time.monotonic() - t0) if realtime else t + REOPEN_DOWN_S  # samples taken meanwhile are lost
        if faults.silenced(t) or t < resume_at:
            truth.frames_silenced += 1
            if faults.silenced(t) and not realtime and not paused:
                paused = True
                time.sleep(faults.silence_for)  # a replay still goes quiet for the silence's wall time
            continue
        if realtime:
            delay = t0 + stop / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if protocol == "medge":
            frame = encode_frame(k, start, samples_uv[start:stop])
        else:
            channels = np.zeros(cyton.CHANNELS)
            channels[order] = truth.samples_uv[start]
            frame = cyton.encode_packet(start, channels, footer=0xC0)
        if rng.random() < drop_rate:
            truth.frames_dropped += 1
            continue  # never sent: the next frame follows the last delimiter that was sent
        wire, hit = _corrupt(frame, corrupt_rate, rng)
        written = out.write(wire)
        if out.host_gone:
            break
        if written < len(wire):  # the host stopped reading: the rest of the frame is lost
            truth.frames_overflow += 1
            prev_delimiter_ok = prev_delimiter_ok if written == 0 else False
            continue
        truth.frames_sent += 1
        truth.bytes_corrupted += int(hit.sum())
        intact = not hit.any()
        truth.frames_damaged += not intact
        if intact and prev_delimiter_ok:
            truth.delivered[start:stop] = True
        prev_delimiter_ok = not hit[-1] if protocol == "medge" else True  # Cyton: no delimiter
        if progress is not None and k % 500 == 0:
            progress(stop / n_total)
    truth.host_disconnected = out.host_gone
    if not out.host_gone:
        time.sleep(HANGUP_DELAY_S)
    return truth

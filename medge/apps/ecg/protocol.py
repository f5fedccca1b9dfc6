"""The medge ECG wire protocol (docs/ecg-protocol.md): COBS-framed, CRC-checked sample frames.

A frame on the wire is ``COBS(payload) + b"\\x00"``; the payload is little-endian
``version u8 | seq u16 | first_sample_index u32 | flags u8 | n u8 | n × 3 × int24 (µV) | crc u16``
with CRC-16/CCITT-FALSE (``binascii.crc_hqx(data, 0xFFFF)``) over everything before the CRC.

`encode_frame` builds a frame; `FrameDecoder` turns a byte stream into `Frame` objects and counts
every frame it has to drop (bad CRC, bad length, unknown version), resyncing at the next 0x00.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

import numpy as np
from medge.common.registry import import_optional

VERSION = 1
LEADS: tuple[str, ...] = ("II", "V1", "V5")
MAX_SAMPLES = 32
HEADER = struct.Struct("<BHIBB")  # version, seq, first_sample_index, flags, n
CRC_BYTES = 2
INT24_MIN, INT24_MAX = -(1 << 23), (1 << 23) - 1
FLAG_LEAD_OFF = (0x01, 0x02, 0x04)  # II, V1, V5
FLAG_SATURATION = 0x08
FLAG_LOW_BATTERY = 0x10
MAX_FRAME_BYTES = 2 * (HEADER.size + MAX_SAMPLES * 9 + CRC_BYTES)  # anything longer is noise


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    return binascii.crc_hqx(data, 0xFFFF)


def _cobs():
    return import_optional("cobs.cobs", what="the medge ECG wire protocol")


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: `data` without any 0x00 byte."""
    return _cobs().encode(data)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of `cobs_encode`; raises ValueError on an invalid encoding."""
    cobs = _cobs()
    try:
        return cobs.decode(data)
    except cobs.DecodeError as exc:
        raise ValueError(str(exc)) from None


def _int24_le(samples: np.ndarray) -> bytes:
    vals = np.asarray(samples, dtype=np.int64).ravel()
    if vals.size and (vals.min() < INT24_MIN or vals.max() > INT24_MAX):
        raise ValueError("sample outside the int24 range")
    u = (vals & 0xFFFFFF).astype("<u4")
    return u.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def _int24_le_decode(raw: bytes, count: int) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8).reshape(count, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return np.where(v & 0x800000, v - (1 << 24), v).astype(np.int32)


def encode_payload(seq: int, first_sample_index: int, samples_uv: np.ndarray, flags: int = 0) -> bytes:
    """The un-stuffed payload (with CRC) for `samples_uv` of shape (n, 3) in µV."""
    samples = np.asarray(samples_uv)
    if samples.ndim != 2 or samples.shape[1] != len(LEADS) or not 1 <= samples.shape[0] <= MAX_SAMPLES:
        raise ValueError(f"a frame carries (n, 3) samples with 1 ≤ n ≤ {MAX_SAMPLES}, got {samples.shape}")
    body = HEADER.pack(VERSION, seq & 0xFFFF, first_sample_index & 0xFFFFFFFF, flags & 0xFF, samples.shape[0])
    body += _int24_le(samples)
    return body + struct.pack("<H", crc16(body))


def encode_frame(seq: int, first_sample_index: int, samples_uv: np.ndarray, flags: int = 0) -> bytes:
    """One wire frame: ``COBS(payload) + b"\\x00"``."""
    return cobs_encode(encode_payload(seq, first_sample_index, samples_uv, flags)) + b"\x00"


@dataclass(frozen=True)
class Frame:
    """A frame that passed every check."""

    seq: int
    first_sample_index: int  # as sent (u32, wraps)
    flags: int
    samples_uv: np.ndarray  # (n, 3) int32: II, V1, V5

    @property
    def lead_off(self) -> tuple[bool, bool, bool]:
        """Lead-off flags for II, V1, V5."""
        return tuple(bool(self.flags & bit) for bit in FLAG_LEAD_OFF)  # type: ignore[return-value]


@dataclass
class FrameCounts:
    """What the decoder saw: good frames and every frame it dropped, by reason."""

    ok: int = 0
    crc_error: int = 0
    bad_length: int = 0
    bad_version: int = 0

    @property
    def dropped(self) -> int:
        """All frames dropped by the decoder."""
        return self.crc_error + self.bad_length + self.bad_version


def decode_payload(payload: bytes, counts: FrameCounts) -> Frame | None:
    """Check one un-stuffed payload; count and return None when it must be dropped."""
    if len(payload) < HEADER.size + CRC_BYTES:
        counts.bad_length += 1
        return None
    version, seq, first, flags, n = HEADER.unpack_from(payload)
    expected = HEADER.size + 9 * n + CRC_BYTES
    crc_ok = struct.unpack_from("<H", payload, len(payload) - CRC_BYTES)[0] == crc16(payload[:-CRC_BYTES])
    if len(payload) != expected or not 1 <= n <= MAX_SAMPLES:
        if crc_ok:
            counts.bad_length += 1
        else:
            counts.crc_error += 1
        return None
    if not crc_ok:
        counts.crc_error += 1
        return None
    if version != VERSION:
        counts.bad_version += 1
        return None
    samples = _int24_le_decode(payload[HEADER.size:HEADER.size + 9 * n], 3 * n).reshape(n, 3)
    counts.ok += 1
    return Frame(seq, first, flags, samples)


@dataclass
class FrameDecoder:
    """Byte stream → frames.  Bytes up to each 0x00 are one candidate frame.

    The very first chunk before the first delimiter may be the tail of a frame sent before the
    port was opened; like every other damaged chunk it is dropped and counted.
    """

    counts: FrameCounts = field(default_factory=FrameCounts)
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Frame]:
        """Decode every complete frame in `data` (plus what was buffered)."""
        frames: list[Frame] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\x00")
            if end < 0:
                if len(self._buffer) > MAX_FRAME_BYTES:  # no delimiter for far too long: noise
                    self.counts.bad_length += 1
                    self._buffer.clear()
                return frames
            chunk = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if not chunk:
                continue  # back-to-back delimiters (sync bytes) carry nothing
            try:
                payload = cobs_decode(chunk)
            except ValueError:
                self.counts.crc_error += 1  # stuffing broken: the frame was damaged on the wire
                continue
            frame = decode_payload(payload, self.counts)
            if frame is not None:
                frames.append(frame)

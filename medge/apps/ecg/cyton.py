"""OpenBCI Cyton serial packets (``--protocol openbci-cyton``).

A packet is 33 bytes: ``0xA0``, an 8-bit sample counter, 8 channels × 24-bit big-endian signed
counts, 6 aux bytes and a footer byte ``0xC0``..``0xC6``.  One count is
4.5 V / 24 / (2²³ − 1) (ADS1299 reference 4.5 V, gain 24).  There is no CRC: a packet whose footer
is wrong is dropped and counted, and the decoder resyncs at the next ``0xA0`` that is followed
by a footer 32 bytes later.  Gaps come from the sample counter (mod 256).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medge.common.errors import UsageError

PACKET_BYTES = 33
HEADER_BYTE = 0xA0
FOOTERS = frozenset(range(0xC0, 0xC7))
CHANNELS = 8
UV_PER_COUNT = 4.5 / 24 / (2 ** 23 - 1) * 1e6
DEFAULT_RATE_HZ = 250
DEFAULT_CHANNEL_MAP: dict[str, int] = {"II": 1, "V1": 2, "V5": 3}


def parse_channel_map(text: str | None) -> dict[str, int]:
    """``"II=1,V1=2,V5=3"`` → ``{"II": 1, "V1": 2, "V5": 3}`` (Cyton channels are 1..8)."""
    if not text:
        return dict(DEFAULT_CHANNEL_MAP)
    mapping: dict[str, int] = {}
    for part in text.split(","):
        lead, sep, chan = part.partition("=")
        lead = lead.strip()
        if not sep or lead not in DEFAULT_CHANNEL_MAP or not chan.strip().isdigit():
            raise UsageError(f"bad --channels entry '{part}': use LEAD=CHANNEL with LEAD in II, V1, V5, e.g. II=1,V1=2,V5=3")
        channel = int(chan)
        if not 1 <= channel <= CHANNELS:
            raise UsageError(f"--channels: Cyton channel {channel} does not exist; use 1..{CHANNELS}")
        mapping[lead] = channel
    if set(mapping) != set(DEFAULT_CHANNEL_MAP) or len(set(mapping.values())) != len(mapping):
        raise UsageError("--channels must map each of II, V1, V5 to its own channel, e.g. II=1,V1=2,V5=3")
    return {lead: mapping[lead] for lead in DEFAULT_CHANNEL_MAP}


def encode_packet(counter: int, channels_uv: np.ndarray, footer: int = 0xC0) -> bytes:
    """One 33-byte packet carrying 8 channel values in µV (rounded to counts)."""
    counts = np.round(np.asarray(channels_uv, dtype=np.float64) / UV_PER_COUNT).astype(np.int64)
    counts = np.clip(counts, -(1 << 23), (1 << 23) - 1)
    body = bytearray([HEADER_BYTE, counter & 0xFF])
    for c in counts:
        body += int(c & 0xFFFFFF).to_bytes(3, "big")
    body += bytes(6)
    body.append(footer)
    return bytes(body)


@dataclass(frozen=True)
class CytonPacket:
    """A packet that passed the header/footer checks."""

    counter: int
    channels_uv: np.ndarray  # (8,) float64


@dataclass
class CytonCounts:
    """Packets decoded and bytes skipped while resyncing."""

    ok: int = 0
    bad_footer: int = 0
    skipped_bytes: int = 0


@dataclass
class CytonDecoder:
    """Byte stream → Cyton packets, resyncing on header + footer."""

    counts: CytonCounts = field(default_factory=CytonCounts)
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[CytonPacket]:
        """Decode every complete packet in `data` (plus what was buffered)."""
        packets: list[CytonPacket] = []
        buf = self._buffer
        buf += data
        start = 0
        while len(buf) - start >= PACKET_BYTES:
            if buf[start] != HEADER_BYTE:
                start += 1
                self.counts.skipped_bytes += 1
                continue
            if buf[start + PACKET_BYTES - 1] not in FOOTERS:
                self.counts.bad_footer += 1
                start += 1
                continue
            raw = np.frombuffer(bytes(buf[start + 2:start + 26]), dtype=np.uint8).reshape(CHANNELS, 3).astype(np.int32)
            v = (raw[:, 0] << 16) | (raw[:, 1] << 8) | raw[:, 2]
            v = np.where(v & 0x800000, v - (1 << 24), v)
            packets.append(CytonPacket(int(buf[start + 1]), v.astype(np.float64) * UV_PER_COUNT))
            self.counts.ok += 1
            start += PACKET_BYTES
        del buf[:start]
        return packets

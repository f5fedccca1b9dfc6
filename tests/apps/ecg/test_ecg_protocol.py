"""The wire protocol and the receiver rules (docs/ecg-protocol.md), byte by byte."""

from __future__ import annotations

import numpy as np

from medge.apps.ecg import cyton
from medge.apps.ecg.protocol import FLAG_LEAD_OFF, crc16, encode_frame, encode_payload
from medge.apps.ecg.serial_reader import Receiver


def _samples(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + n)[:, None] * np.array([1, -3, 7]) + np.array([-8_000_000, 0, 8_000_000]) // 2
            ).astype(np.int32)


def test_crc_check_value_and_frame_layout():
    assert crc16(b"123456789") == 0x29B1
    payload = encode_payload(7, 1234, _samples(2))
    assert payload[0] == 1 and int.from_bytes(payload[1:3], "little") == 7
    assert int.from_bytes(payload[3:7], "little") == 1234 and payload[8] == 2
    assert len(payload) == 9 + 2 * 9 + 2
    frame = encode_frame(7, 1234, _samples(2))
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]


def test_receiver_gaps_damage_and_lead_off():
    rx = Receiver("medge")
    good = [encode_frame(k, 10 * k, _samples(10, 10 * k)) for k in range(6)]
    damaged = bytearray(good[2])
    damaged[5] ^= 0x40
    lead_off = encode_frame(4, 40, _samples(10, 40), flags=FLAG_LEAD_OFF[1])
    wire = good[0] + good[1] + bytes(damaged) + lead_off + good[5] + b"\x05garbage\x00" + good[5]
    blocks = rx.feed(wire[:37], 0.0) + rx.feed(wire[37:], 0.0)
    assert [b.start for b in blocks] == [0, 10, 40, 50]  # frame 2 damaged, frame 3 never sent
    np.testing.assert_array_equal(blocks[0].values_uv, _samples(10, 0))
    assert np.isnan(blocks[2].values_uv[:, 1]).all() and not np.isnan(blocks[2].values_uv[:, [0, 2]]).any()
    rx.finish()
    st = rx.stats
    assert st.gaps == [{"start": 20, "length": 20}] and st.missing == 20 and st.received == 40
    assert st.crc_error == 2 and st.out_of_order == 1 and st.ok == 4
    assert st.lead_off == [{"lead": "V1", "start": 40, "length": 10}]


def test_cyton_packets_scale_counter_gaps_and_resync():
    mapping = cyton.parse_channel_map("II=3,V1=1,V5=8")
    rx = Receiver("openbci-cyton", mapping)
    chans = np.zeros(8)
    chans[[2, 0, 7]] = [1000.0, -250.0, 42.0]
    packets = [cyton.encode_packet(c, chans) for c in (254, 255, 1)]
    blocks = rx.feed(b"\x13\xa0" + packets[0] + packets[1] + packets[2], 0.0)
    assert [b.start for b in blocks] == [254, 255, 257]
    np.testing.assert_allclose(blocks[0].values_uv[0], [1000.0, -250.0, 42.0], atol=cyton.UV_PER_COUNT)
    assert rx.stats.gaps == [{"start": 256, "length": 1}]
    assert abs(cyton.UV_PER_COUNT - 4.5 / 24 / (2 ** 23 - 1) * 1e6) < 1e-12

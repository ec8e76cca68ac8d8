"""G.711 μ-law: the one codec implementation, checked against ITU reference points and its own inverse."""

from __future__ import annotations

import array
import sys

from switchboard.audio import g711


def _pcm(*samples: int) -> bytes:
    data = array.array("h", samples)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def test_reference_points() -> None:
    assert g711.pcm16_to_mulaw(_pcm(0, 32767, -32768, -1)) == bytes([0xFF, 0x80, 0x00, 0x7E])
    assert g711.mulaw_to_pcm16(bytes([0xFF, 0x80, 0x00, 0x7F])) == _pcm(0, 32124, -32124, 0)


def test_decoding_then_encoding_is_the_identity_on_every_code() -> None:
    codes = bytes(range(256))
    roundtrip = g711.pcm16_to_mulaw(g711.mulaw_to_pcm16(codes))
    # 0x7F and 0xFF both decode to 0 (negative and positive zero), which encodes as 0xFF.
    assert roundtrip == codes.replace(b"\x7f", b"\xff")


def test_quantisation_error_is_within_the_segment_step() -> None:
    samples = list(range(-32768, 32768, 97))
    decoded = array.array("h")
    decoded.frombytes(g711.mulaw_to_pcm16(g711.pcm16_to_mulaw(_pcm(*samples))))
    if sys.byteorder == "big":
        decoded.byteswap()
    for original, back in zip(samples, decoded, strict=True):
        assert abs(original - back) <= max(8, abs(original) // 16) + 132


def test_tables_match_the_functions() -> None:
    assert g711.DECODE_TABLE[0xFF] == 0 and len(g711.ENCODE_TABLE) == 65536
    assert g711.ENCODE_TABLE[1000 + 32768] == g711.pcm16_to_mulaw(_pcm(1000))[0]

"""G.711 μ-law <-> 16-bit linear PCM, bit-exact with the ITU reference (and stdlib audioop). Pure.

Written with the stdlib only so the voice server and the simulator need no numpy; the tables are
built once at import.
"""

from __future__ import annotations

import array
import sys

_BIAS = 0x84


def _decode_byte(u: int) -> int:
    u = ~u & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


def _encode_sample(sample: int) -> int:
    # 14-bit reduction first (arithmetic shift), as the ITU/audioop encoder does.
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + 0x21
    segment = 0
    for end in (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF):
        if value <= end:
            break
        segment += 1
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


_DECODE = [_decode_byte(u) for u in range(256)]
_ENCODE = bytes(_encode_sample(s) for s in range(-32768, 32768))

# The codec as tables, for vectorised users (numpy in the engine, the simulator): one source of truth.
DECODE_TABLE: tuple[int, ...] = tuple(_DECODE)
"""μ-law byte -> PCM16 sample."""
ENCODE_TABLE: bytes = _ENCODE
"""PCM16 sample + 32768 -> μ-law byte."""

MULAW_SILENCE = 0xFF


def mulaw_to_pcm16(mulaw: bytes) -> bytes:
    """μ-law bytes -> little-endian PCM16 bytes (twice as long)."""
    samples = array.array("h", (_DECODE[b] for b in mulaw))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def pcm16_to_mulaw(pcm16: bytes) -> bytes:
    """Little-endian PCM16 bytes -> μ-law bytes (half as long)."""
    samples = array.array("h")
    samples.frombytes(pcm16[: len(pcm16) - len(pcm16) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return bytes(_ENCODE[s + 32768] for s in samples)

"""G.711 mu-law <-> PCM16 with numpy lookup tables (bit-exact with the stdlib `audioop`). Pure: no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 8_000
BYTES_PER_MS = 8
MULAW_SILENCE = 0xFF


def _decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 7, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _encode_table() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2
    sign = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.where(x < 0, np.minimum(-x, 8159), np.minimum(x, 8159)) + 0x21
    segment = np.zeros_like(magnitude)
    for index, end in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        segment = np.where((magnitude > end) & (segment == index), index + 1, segment)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0xF))
    return (code ^ sign).astype(np.uint8)


_DECODE = _decode_table()
_ENCODE = _encode_table()


def mulaw_to_pcm16(mulaw: bytes) -> npt.NDArray[np.int16]:
    return _DECODE[np.frombuffer(mulaw, dtype=np.uint8)]


def pcm16_to_mulaw(pcm16: npt.NDArray[np.int16]) -> bytes:
    return bytes(_ENCODE[pcm16.astype(np.int32) + 32768].tobytes())


def float_to_pcm16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] -> int16, clipped."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def mulaw_duration_ms(mulaw_bytes: int) -> int:
    return mulaw_bytes // BYTES_PER_MS

"""G.711 mu-law <-> PCM16 as numpy arrays, over switchboard.audio.g711's tables. Pure: no I/O."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from switchboard.audio import g711 as shared_g711

SAMPLE_RATE_HZ = 8_000
BYTES_PER_MS = 8
MULAW_SILENCE = 0xFF


# The tables come from switchboard.audio.g711 (the one implementation of the codec), as numpy arrays.
_DECODE = np.array(shared_g711.DECODE_TABLE, dtype=np.int16)
_ENCODE = np.frombuffer(shared_g711.ENCODE_TABLE, dtype=np.uint8)


def mulaw_to_pcm16(mulaw: bytes) -> npt.NDArray[np.int16]:
    return _DECODE[np.frombuffer(mulaw, dtype=np.uint8)]


def pcm16_to_mulaw(pcm16: npt.NDArray[np.int16]) -> bytes:
    return bytes(_ENCODE[pcm16.astype(np.int32) + 32768].tobytes())


def float_to_pcm16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] -> int16, clipped."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def mulaw_duration_ms(mulaw_bytes: int) -> int:
    return mulaw_bytes // BYTES_PER_MS

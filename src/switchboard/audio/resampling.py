"""Sample-rate conversion of 16-bit PCM between telephone (8 kHz) and wideband rates. Pure: no I/O.

A windowed-sinc (Kaiser) low-pass filter applied polyphase for a rational ratio: upsampling by an
integer factor keeps the original samples exactly; downsampling removes what would alias.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

from switchboard.audio import g711

TAPS_PER_SIDE = 16
"""Filter half-length, in input samples (32 taps per output phase)."""
_KAISER_BETA = 8.0

# μ-law -> PCM16 for all 256 codes, from the bit-exact codec, so numpy can decode by table look-up.
_MULAW_TO_PCM16 = np.frombuffer(g711.mulaw_to_pcm16(bytes(range(256))), dtype="<i2").astype(np.float64)


def resample_pcm16(pcm16: bytes, *, from_rate_hz: int, to_rate_hz: int) -> bytes:
    """Little-endian mono PCM16 at `from_rate_hz` -> the same at `to_rate_hz`.

    The output has `len(samples) * to_rate_hz // from_rate_hz` samples; an odd trailing byte is ignored.

    Raises:
        ValueError: a rate that is not positive.
    """
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float64)
    return _to_pcm16(_resample(samples, from_rate_hz, to_rate_hz))


def mulaw_to_pcm16_16k(mulaw: bytes) -> bytes:
    """Telephone μ-law 8 kHz -> little-endian PCM16 16 kHz mono (what Scribe calls `pcm_s16le_16`).

    Four output bytes per input byte.
    """
    samples = _MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)]
    return _to_pcm16(_resample(samples, 8_000, 16_000))


def _resample(samples: npt.NDArray[np.float64], from_rate_hz: int, to_rate_hz: int) -> npt.NDArray[np.float64]:
    if from_rate_hz <= 0 or to_rate_hz <= 0:
        raise ValueError("sample rates must be positive")
    divisor = math.gcd(from_rate_hz, to_rate_hz)
    up, down = to_rate_hz // divisor, from_rate_hz // divisor
    out_len = len(samples) * up // down
    if up == down or len(samples) == 0:
        return samples[:out_len]
    # Zero-stuff by `up`, low-pass, keep every `down`-th sample; only the phases actually used are
    # computed: upsampled[n*up + p] = sum_i h[p + i*up] * samples[n + TAPS_PER_SIDE - i].
    taps = _lowpass(up, down)
    phases = np.empty((up, len(samples)), dtype=np.float64)
    for phase in range(up):
        full = np.convolve(samples, taps[phase::up])
        phases[phase] = full[TAPS_PER_SIDE : TAPS_PER_SIDE + len(samples)]
    upsampled = phases.T.reshape(-1)
    return upsampled[::down][:out_len]


@cache
def _lowpass(up: int, down: int) -> npt.NDArray[np.float64]:
    """Kaiser-windowed sinc at the intermediate rate (`up` x input): cutoff at the lower Nyquist, gain `up`."""
    factor = max(up, down)
    half = TAPS_PER_SIDE * up
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.sinc(offsets / factor) * np.kaiser(2 * half + 1, _KAISER_BETA)
    taps *= up / factor
    taps.setflags(write=False)
    return taps


def _to_pcm16(samples: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()

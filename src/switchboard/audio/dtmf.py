"""DTMF (touch-tone) keys as audio: synthesis, and a test (the DFT at the eight DTMF frequencies) of whether a frame is a key's tone.

Pure: no I/O. Each key is the sum of one low-group and one high-group sine (ITU-T Q.23). The telephone
network plays these tones into the call's audio when a key is pressed, so a voice-activity detector
must not take them for speech.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from switchboard.audio.g711 import pcm16_to_mulaw

SAMPLE_RATE_HZ = 8000
LOW_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
_LAYOUT = ("123A", "456B", "789C", "*0#D")
KEY_FREQUENCIES_HZ: dict[str, tuple[float, float]] = {
    key: (LOW_HZ[row], HIGH_HZ[column]) for row, keys in enumerate(_LAYOUT) for column, key in enumerate(keys)
}
# A frame is a key's tone when its strongest low and high components carry this share of its energy.
TONE_ENERGY_SHARE = 0.6


def dtmf_tone_mulaw(key: str, duration_ms: int = 100, *, level_dbfs: float = -10.0) -> bytes:
    """`duration_ms` of the key's tone as 8 kHz μ-law, each sine at `level_dbfs` - 3 dB (peak below full scale).

    Raises:
        KeyError: not a DTMF key (0-9, *, #, A-D).
    """
    low_hz, high_hz = KEY_FREQUENCIES_HZ[key]
    t = np.arange(int(SAMPLE_RATE_HZ * duration_ms / 1000)) / SAMPLE_RATE_HZ
    amplitude = 32767.0 * 10 ** (level_dbfs / 20.0) / 2.0
    samples = amplitude * (np.sin(2 * np.pi * low_hz * t) + np.sin(2 * np.pi * high_hz * t))
    return pcm16_to_mulaw(samples.astype("<i2").tobytes())


@functools.lru_cache(maxsize=8)
def _probes(frame_samples: int) -> npt.NDArray[np.complex128]:
    """The DFT rows at the 8 DTMF frequencies (low group first) for frames of `frame_samples`."""
    n = np.arange(frame_samples)
    frequencies = np.array(LOW_HZ + HIGH_HZ)
    return np.exp(-2j * np.pi * np.outer(frequencies, n) / SAMPLE_RATE_HZ)


def is_dtmf_frame(pcm16: npt.NDArray[np.int16]) -> bool:
    """Whether a frame (e.g. 20 ms at 8 kHz) is dominated by one DTMF key's two tones."""
    samples = pcm16.astype(np.float64)
    energy = float(np.dot(samples, samples))
    if energy <= 0.0:
        return False
    # Normalised so a full-frame sine at exactly a probe frequency has power == its energy (sum of squares).
    power = np.abs(_probes(samples.size) @ samples) ** 2 * 2.0 / samples.size
    low, high = float(power[:4].max()), float(power[4:].max())
    return low + high >= TONE_ENERGY_SHARE * energy and min(low, high) >= 0.15 * energy

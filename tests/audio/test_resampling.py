"""PCM16 resampling: lengths, preserved samples, tones kept in band, aliases removed."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.audio.g711 import mulaw_to_pcm16, pcm16_to_mulaw
from switchboard.audio.resampling import mulaw_to_pcm16_16k, resample_pcm16


def tone(frequency_hz: float, rate_hz: int, ms: int, amplitude: float = 8_000.0) -> np.ndarray:
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    return amplitude * np.sin(2 * np.pi * frequency_hz * t)


def pcm(samples: np.ndarray) -> bytes:
    return bytes(np.rint(samples).astype("<i2").tobytes())


def samples_of(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def test_upsampling_8_to_16_khz_keeps_every_sample_and_fills_in_the_tone() -> None:
    source = tone(1_000, 8_000, 500)
    out = samples_of(resample_pcm16(pcm(source), from_rate_hz=8_000, to_rate_hz=16_000))
    assert len(out) == 2 * len(source)
    assert np.array_equal(out[::2], np.rint(source))
    ideal = tone(1_000, 16_000, 500)
    interior = slice(64, -64)  # the filter sees zeros beyond the edges
    assert np.max(np.abs(out[interior] - ideal[interior])) < 4.0


@pytest.mark.parametrize(("from_hz", "to_hz"), [(16_000, 8_000), (24_000, 8_000), (8_000, 24_000),
                                                  (16_000, 24_000), (24_000, 16_000)])
def test_in_band_tones_survive_any_ratio(from_hz: int, to_hz: int) -> None:
    out = samples_of(resample_pcm16(pcm(tone(700, from_hz, 400)), from_rate_hz=from_hz, to_rate_hz=to_hz))
    assert len(out) == to_hz * 400 // 1000
    ideal = tone(700, to_hz, 400)
    assert np.max(np.abs(out[100:-100] - ideal[100:-100])) < 8.0


def test_downsampling_removes_what_would_alias() -> None:
    # 6 kHz at 16 kHz would fold to 2 kHz at 8 kHz; the low-pass removes it instead.
    out = samples_of(resample_pcm16(pcm(tone(6_000, 16_000, 300)), from_rate_hz=16_000, to_rate_hz=8_000))
    assert np.max(np.abs(out[50:-50])) < 8.0


def test_edges_clip_and_odd_bytes_and_same_rates() -> None:
    loud = pcm(np.array([32_767.0, -32_768.0] * 200))
    out = samples_of(resample_pcm16(loud, from_rate_hz=8_000, to_rate_hz=16_000))
    assert out.max() <= 32_767 and out.min() >= -32_768
    assert resample_pcm16(b"\x01\x02\x03", from_rate_hz=8_000, to_rate_hz=8_000) == b"\x01\x02"
    assert resample_pcm16(b"", from_rate_hz=8_000, to_rate_hz=16_000) == b""
    with pytest.raises(ValueError):
        resample_pcm16(b"\0\0", from_rate_hz=0, to_rate_hz=8_000)


def test_phone_mulaw_to_scribe_pcm() -> None:
    mulaw = pcm16_to_mulaw(pcm(tone(440, 8_000, 250)))
    out = mulaw_to_pcm16_16k(mulaw)
    assert len(out) == 4 * len(mulaw)
    assert np.array_equal(samples_of(out)[::2], samples_of(mulaw_to_pcm16(mulaw)))
    assert mulaw_to_pcm16_16k(b"") == b""

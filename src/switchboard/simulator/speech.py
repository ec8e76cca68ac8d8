"""Audio for the simulated caller and the fake model: G.711 mu-law, WAV files, a speech-like synthesizer.

Pure and stdlib-only (no numpy, no `audioop`, which is deprecated in 3.11). `synthesize_mulaw` is the seam
where a neural TTS can replace the built-in speech-like signal later.
"""

from __future__ import annotations

import math
import random
import re
import sys
import wave
import zlib
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from switchboard.audio import g711

SAMPLE_RATE_HZ = 8_000
MULAW_BYTES_PER_MS = 8
MULAW_SILENCE = 0xFF
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * MULAW_BYTES_PER_MS

def pcm16_to_mulaw(samples: Iterable[int]) -> bytes:
    """Encode signed 16-bit samples (clipped to int16) as G.711 mu-law bytes (switchboard.audio.g711's table)."""
    table = g711.ENCODE_TABLE
    return bytes(table[max(-32_768, min(32_767, int(s))) + 32_768] for s in samples)


def mulaw_to_pcm16(mulaw: bytes) -> array[int]:
    """Decode G.711 mu-law bytes to signed 16-bit samples (an `array('h')`, native byte order)."""
    table = g711.DECODE_TABLE
    return array("h", (table[b] for b in mulaw))


def mulaw_silence(duration_ms: int) -> bytes:
    return bytes([MULAW_SILENCE]) * (duration_ms * MULAW_BYTES_PER_MS)


def tone_pcm16(duration_ms: int, *, frequency_hz: float, amplitude: int = 6_000,
               sample_rate_hz: int = SAMPLE_RATE_HZ) -> array[int]:
    """A sine tone, starting at phase zero."""
    count = duration_ms * sample_rate_hz // 1000
    step = 2 * math.pi * frequency_hz / sample_rate_hz
    return array("h", (int(amplitude * math.sin(step * n)) for n in range(count)))


def mulaw_tone(duration_ms: int, *, frequency_hz: float, amplitude: int = 6_000) -> bytes:
    """A sine tone as 8 kHz mu-law (8 bytes per ms); never mistaken for 0xFF silence."""
    return pcm16_to_mulaw(tone_pcm16(duration_ms, frequency_hz=frequency_hz, amplitude=amplitude))


def rms(samples: Sequence[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


_WORD_OR_PAUSE = re.compile(r"[A-Za-z0-9']+|[.,!?;:]")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+", re.IGNORECASE)
_PAUSE_MS = {".": 350, "!": 350, "?": 350, ",": 180, ";": 220, ":": 220}


_NEURAL_VOICE: Any = None
_NEURAL_VOICE_TRIED = False


def neural_voice_available() -> bool:
    """True when the local engine's neural TTS (hibari, `requirements/local.txt`) is installed."""
    global _NEURAL_VOICE, _NEURAL_VOICE_TRIED
    if not _NEURAL_VOICE_TRIED:
        _NEURAL_VOICE_TRIED = True
        try:
            from switchboard.engine.speech import Synthesizer

            _NEURAL_VOICE = Synthesizer()
        except (ImportError, OSError, RuntimeError, ValueError):
            _NEURAL_VOICE = None
    return _NEURAL_VOICE is not None


def speak_mulaw(text: str) -> bytes:
    """Real speech for `text` (8 kHz mu-law) when the neural voice is installed, else `synthesize_mulaw`.

    Blocking CPU work: call it through `asyncio.to_thread` from async code.
    """
    if neural_voice_available():
        audio: bytes = _NEURAL_VOICE.synthesize_mulaw(text)
        return audio
    return synthesize_mulaw(text)


def synthesize_mulaw(text: str) -> bytes:
    """A speech-like 8 kHz mu-law signal for `text`: voiced syllables with pitch glides and pauses.

    Not intelligible speech: it has speech's energy envelope (so a VAD hears talking) and a duration that
    follows the text (about 0.18 s per syllable, pauses at punctuation). Deterministic for a given text.
    Replace this function to plug in a real TTS; callers only rely on "8 kHz mu-law bytes".
    """
    rng = random.Random(zlib.crc32(text.encode()))
    samples: list[int] = []
    for token in _WORD_OR_PAUSE.findall(text):
        if token in _PAUSE_MS:
            samples.extend([0] * (_PAUSE_MS[token] * SAMPLE_RATE_HZ // 1000))
            continue
        syllables = max(1, len(_VOWEL_GROUPS.findall(token)))
        for _ in range(syllables):
            samples.extend(_syllable(rng))
        samples.extend([0] * (60 * SAMPLE_RATE_HZ // 1000))
    return pcm16_to_mulaw(samples)


def _syllable(rng: random.Random) -> list[int]:
    duration_s = rng.uniform(0.13, 0.22)
    count = int(duration_s * SAMPLE_RATE_HZ)
    f0_start = rng.uniform(105.0, 175.0)
    f0_end = f0_start * rng.uniform(0.85, 1.15)
    formant_hz = rng.uniform(500.0, 1_100.0)
    onset = int(rng.uniform(0.015, 0.035) * SAMPLE_RATE_HZ)
    out: list[int] = []
    phase = 0.0
    for n in range(count):
        f0 = f0_start + (f0_end - f0_start) * n / count
        phase += 2 * math.pi * f0 / SAMPLE_RATE_HZ
        envelope = math.sin(math.pi * n / count) ** 0.6
        voiced = 0.0
        for harmonic in range(1, 9):
            frequency = f0 * harmonic
            if frequency >= SAMPLE_RATE_HZ / 2:
                break
            # Emphasise harmonics near one "formant" so the spectrum is vowel-like rather than a buzz.
            weight = 1.0 / harmonic + 0.8 * math.exp(-(((frequency - formant_hz) / 350.0) ** 2))
            voiced += weight * math.sin(phase * harmonic)
        value = 2_600.0 * envelope * voiced
        if n < onset:
            value += rng.gauss(0.0, 1_400.0)
        out.append(int(value))
    return out


def read_wav_as_mulaw(path: str | Path) -> bytes:
    """Read a PCM WAV (8/16/32-bit, any rate, mono or multi-channel) as 8 kHz mono mu-law.

    Blocking file I/O: call it through `asyncio.to_thread` from async code.
    Raises:
        ValueError: the file is not an uncompressed PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate_hz = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from exc
    if width == 1:
        interleaved = array("h", ((b - 128) << 8 for b in frames))
    elif width == 2:
        interleaved = array("h")
        interleaved.frombytes(frames)
        if sys.byteorder == "big":
            interleaved.byteswap()
    elif width == 4:
        wide = array("i")
        wide.frombytes(frames)
        if sys.byteorder == "big":
            wide.byteswap()
        interleaved = array("h", (s >> 16 for s in wide))
    else:
        raise ValueError(f"unsupported WAV sample width: {width * 8} bits")
    mono = [sum(interleaved[i : i + channels]) // channels for i in range(0, len(interleaved), channels)]
    return pcm16_to_mulaw(resample_pcm16(mono, rate_hz, SAMPLE_RATE_HZ))


def resample_pcm16(samples: Sequence[int], from_hz: int, to_hz: int) -> list[int]:
    """Linear-interpolation resampler with a box filter when downsampling; good enough for phone audio."""
    if from_hz == to_hz or not samples:
        return list(samples)
    ratio = from_hz / to_hz
    source: Sequence[int] = samples
    if ratio > 1:
        width = int(ratio)
        prefix = [0]
        for s in samples:
            prefix.append(prefix[-1] + s)
        source = [(prefix[min(len(samples), i + width)] - prefix[i]) // max(1, min(width, len(samples) - i))
                  for i in range(len(samples))]
    count = int(len(samples) / ratio)
    out: list[int] = []
    last = len(source) - 1
    for j in range(count):
        position = j * ratio
        i = int(position)
        fraction = position - i
        nxt = source[min(i + 1, last)]
        out.append(int(source[i] + (nxt - source[i]) * fraction))
    return out


def write_stereo_wav(path: str | Path, left_mulaw: bytes, right_mulaw: bytes) -> None:
    """Write two mu-law channels as an 8 kHz 16-bit stereo WAV; the shorter one is padded with silence.

    Blocking file I/O: call it through `asyncio.to_thread` from async code.
    """
    length = max(len(left_mulaw), len(right_mulaw))
    left = mulaw_to_pcm16(left_mulaw.ljust(length, bytes([MULAW_SILENCE])))
    right = mulaw_to_pcm16(right_mulaw.ljust(length, bytes([MULAW_SILENCE])))
    interleaved = array("h", bytes(4 * length))
    interleaved[0::2] = left
    interleaved[1::2] = right
    if sys.byteorder == "big":
        interleaved.byteswap()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(interleaved.tobytes())

"""The engine's models: Whisper tiny.en (faster-whisper, int8) and the hibari voice, both on CPU.

Blocking and CPU-bound: call these from one worker thread, never on the event loop. Audio in and out is
8 kHz G.711 mu-law, resampled with soxr (16 kHz for Whisper, 24 kHz from hibari).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import numpy as np
import numpy.typing as npt

from switchboard.engine import g711, model_files

WHISPER_SAMPLE_RATE_HZ = 16_000
TTS_SEED = 0


def _import_faster_whisper() -> Any:
    """Import faster_whisper without PyAV when PyAV is absent.

    faster_whisper imports `av` at module level only to decode audio files; the engine hands it numpy
    arrays, so a placeholder module stands in during the import and is removed again right after, so
    any later `import av` elsewhere still fails honestly.
    """
    if importlib.util.find_spec("av") is not None:
        import faster_whisper

        return faster_whisper
    placeholder = types.ModuleType("av")
    sys.modules["av"] = placeholder
    try:
        import faster_whisper
    finally:
        if sys.modules.get("av") is placeholder:
            del sys.modules["av"]
    return faster_whisper


class Transcriber:
    """Speech to text for one utterance at a time (Whisper works on whole utterances, not streams)."""

    def __init__(self, cpu_threads: int = 2) -> None:
        folder = model_files.verify(model_files.WHISPER_FILES) / "model"
        faster_whisper = _import_faster_whisper()
        self._model = faster_whisper.WhisperModel(
            str(folder), device="cpu", compute_type="int8", cpu_threads=cpu_threads, num_workers=1
        )

    def transcribe_mulaw(self, mulaw: bytes) -> str:
        """Text of 8 kHz mu-law speech; "" for silence or noise."""
        import soxr

        if len(mulaw) < g711.BYTES_PER_MS * 100:
            return ""
        samples_8k = g711.mulaw_to_pcm16(mulaw).astype(np.float32) / 32768.0
        samples_16k = soxr.resample(samples_8k, g711.SAMPLE_RATE_HZ, WHISPER_SAMPLE_RATE_HZ)
        segments, _info = self._model.transcribe(
            samples_16k.astype(np.float32),
            language="en",
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


class Synthesizer:
    """Text to 8 kHz mu-law with hibari's bundled voice ("heart"; the others would download)."""

    def __init__(self) -> None:
        model_files.verify(model_files.HIBARI_FILES)
        from hibari import Hibari

        self._tts = Hibari(voice="heart", threads=1)
        self._source_rate_hz = int(self._tts.sample_rate)

    def split_sentences(self, text: str) -> list[str]:
        return [sentence.strip() for sentence in self._tts.split_sentences(text) if sentence.strip()]

    def synthesize_float(self, text: str) -> npt.NDArray[np.float32]:
        """Float samples at 8 kHz (deterministic: fixed seed)."""
        import soxr

        audio = self._tts(text, seed=TTS_SEED)
        if len(audio) == 0:
            return np.zeros(0, np.float32)
        return np.asarray(soxr.resample(audio, self._source_rate_hz, g711.SAMPLE_RATE_HZ), dtype=np.float32)

    def synthesize_mulaw(self, text: str) -> bytes:
        return g711.pcm16_to_mulaw(g711.float_to_pcm16(self.synthesize_float(text)))

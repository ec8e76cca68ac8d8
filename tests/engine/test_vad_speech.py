"""Server VAD on real synthesized speech (hibari -> 8 kHz mu-law) with known silence gaps."""

from __future__ import annotations

import numpy as np

from switchboard.engine import g711
from switchboard.engine.app import Engine
from switchboard.engine.vad import SpeechStarted, SpeechStopped, TurnDetector, WebRtcFrameClassifier

SENTENCES = (
    "Hi, I would like to know when your store opens on Saturday.",
    "Can you transfer me to a human, please?",
    "Thanks, that is all for today.",
)
GAPS_MS = (1000, 1500, 2000, 1200)


def _voiced_span_ms(mulaw: bytes) -> tuple[int, int]:
    """First and last 20 ms frame louder than -40 dBFS: where the speech really is."""
    pcm = g711.mulaw_to_pcm16(mulaw).astype(np.float64)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    loud = np.nonzero(20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) / 32768 + 1e-9) > -40)[0]
    return int(loud[0]) * 20, int(loud[-1] + 1) * 20


def test_turns_start_and_stop_at_the_speech_with_padding_and_hang_over(engine: Engine) -> None:
    audio = b"\xff" * GAPS_MS[0] * 8
    truth: list[tuple[int, int]] = []
    for sentence, gap_ms in zip(SENTENCES, GAPS_MS[1:], strict=True):
        speech = engine.synthesizer.synthesize_mulaw(sentence)
        speech = speech[: len(speech) // 160 * 160]
        start, end = _voiced_span_ms(speech)
        offset_ms = len(audio) // 8
        truth.append((offset_ms + start, offset_ms + end))
        audio += speech + b"\xff" * gap_ms * 8

    detector = TurnDetector(WebRtcFrameClassifier(threshold=0.9), prefix_padding_ms=300, silence_duration_ms=500)
    events = []
    for offset in range(0, len(audio), 160):  # 20 ms appends, as Twilio sends them
        events.extend(detector.push(audio[offset: offset + 160]))

    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * len(SENTENCES)
    for (start_ms, end_ms), started, stopped in zip(truth, events[::2], events[1::2], strict=True):
        assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
        # Detection needs 3 voiced frames; the reported start then goes back by the 300 ms padding.
        assert start_ms - 300 - 20 <= started.audio_start_ms <= start_ms - 300 + 100, (start_ms, started)
        # The turn ends after 500 ms of silence; the reported end includes that silence.
        assert end_ms + 500 - 40 <= stopped.audio_end_ms <= end_ms + 500 + 160, (end_ms, stopped)


def test_a_pause_between_sentences_longer_than_the_hang_over_splits_the_turn(engine: Engine) -> None:
    speech = engine.synthesizer.synthesize_mulaw("Thanks, that is all. Goodbye.")  # hibari pauses ~0.7 s
    detector = TurnDetector(WebRtcFrameClassifier(threshold=0.9), prefix_padding_ms=300, silence_duration_ms=500)
    events = detector.push(speech + b"\xff" * 8000)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2
    assert events[2].audio_start_ms >= events[1].audio_end_ms  # type: ignore[union-attr]
    patient = TurnDetector(WebRtcFrameClassifier(threshold=0.9), prefix_padding_ms=300, silence_duration_ms=1000)
    assert [type(e) for e in patient.push(speech + b"\xff" * 8000)] == [SpeechStarted, SpeechStopped]


def test_silence_and_quiet_noise_never_start_a_turn() -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(8000 * 5) * 32768 * 10 ** (-55 / 20)).astype(np.int16)
    detector = TurnDetector(WebRtcFrameClassifier(threshold=0.9))
    assert detector.push(g711.pcm16_to_mulaw(noise) + b"\xff" * 8000 * 3) == []

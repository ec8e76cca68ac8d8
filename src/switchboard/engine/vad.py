"""Server-VAD turn detection on 8 kHz mu-law: where the caller's speech starts and stops.

Pure: no I/O and no clock; positions are milliseconds of audio appended since the session started,
which is what the Realtime protocol reports (`audio_start_ms` includes the prefix padding,
`audio_end_ms` includes the silence that ended the turn). The per-frame speech decision is a port
(`FrameClassifier`); `WebRtcFrameClassifier` is the production one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from switchboard.audio.dtmf import is_dtmf_frame
from switchboard.engine import g711

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * g711.BYTES_PER_MS
# Speech starts when this many of the last START_WINDOW_FRAMES frames are voiced (40-60 ms to detect).
START_VOICED_FRAMES = 3
START_WINDOW_FRAMES = 4

FrameClassifier = Callable[[bytes], bool]
"""Takes one 20 ms frame of 8 kHz mu-law, says whether it holds speech."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


def webrtc_mode_for_threshold(threshold: float) -> int:
    """Map server_vad `threshold` (0-1, higher needs clearer speech) onto webrtcvad's aggressiveness 0-3.

    0.5 (the protocol default) -> 2, the mode measured best on phone audio; 0.9 -> 3.
    """
    return max(0, min(3, int(threshold * 4)))


def level_floor_dbfs(threshold: float) -> float:
    """Frames quieter than this never count as speech: -60 dBFS at threshold 0, -45 dBFS at 1."""
    return -60.0 + 15.0 * max(0.0, min(1.0, threshold))


class WebRtcFrameClassifier:
    """webrtcvad on native 8 kHz 20 ms frames, plus a level floor so near-silence never triggers."""

    def __init__(self, threshold: float) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(webrtc_mode_for_threshold(threshold))
        self._floor_dbfs = level_floor_dbfs(threshold)

    def __call__(self, mulaw_frame: bytes) -> bool:
        pcm16 = g711.mulaw_to_pcm16(mulaw_frame)
        rms = float(np.sqrt(np.mean(pcm16.astype(np.float64) ** 2))) + 1e-9
        if 20.0 * np.log10(rms / 32768.0) < self._floor_dbfs:
            return False
        if not self._vad.is_speech(pcm16.tobytes(), g711.SAMPLE_RATE_HZ):
            return False
        # webrtcvad takes a keypad's tone for speech; the network plays one into the audio at each key press.
        return not is_dtmf_frame(pcm16)


class TurnDetector:
    """Feeds appended audio through a frame classifier and reports speech start and stop positions."""

    def __init__(
        self,
        classify: FrameClassifier,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        position_ms: int = 0,
    ) -> None:
        """`position_ms`: where this detector starts in the session's audio (when settings change mid-call)."""
        self._classify = classify
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self._pending = bytearray()
        self._position_ms = position_ms
        self._floor_ms = position_ms
        self._recent: deque[tuple[int, bool]] = deque(maxlen=START_WINDOW_FRAMES)
        self._is_speaking = False
        self._silence_ms = 0

    @property
    def is_speaking(self) -> bool:
        return self._is_speaking

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio classified so far (whole frames)."""
        return self._position_ms

    def push(self, mulaw: bytes) -> list[VadEvent]:
        """Add appended audio of any length; returns the turn events it completes, in order."""
        self._pending.extend(mulaw)
        events: list[VadEvent] = []
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            event = self._push_frame(frame)
            if event is not None:
                events.append(event)
        return events

    def reset(self, floor_ms: int) -> None:
        """Forget the current turn (after a commit or clear); speech may not start before `floor_ms`."""
        self._recent.clear()
        self._is_speaking = False
        self._silence_ms = 0
        self._floor_ms = floor_ms

    def _push_frame(self, frame: bytes) -> VadEvent | None:
        frame_start_ms = self._position_ms
        self._position_ms += FRAME_MS
        is_voiced = self._classify(frame)
        if not self._is_speaking:
            self._recent.append((frame_start_ms, is_voiced))
            voiced_starts = [start for start, voiced in self._recent if voiced]
            if len(voiced_starts) >= START_VOICED_FRAMES:
                self._is_speaking = True
                self._silence_ms = 0
                self._recent.clear()
                start_ms = max(self._floor_ms, voiced_starts[0] - self.prefix_padding_ms, 0)
                return SpeechStarted(audio_start_ms=start_ms)
            return None
        if is_voiced:
            self._silence_ms = 0
            return None
        self._silence_ms += FRAME_MS
        if self._silence_ms >= self.silence_duration_ms:
            self._is_speaking = False
            self._silence_ms = 0
            # The audio up to here belongs to this turn; the next turn cannot reach back into it.
            self._floor_ms = self._position_ms
            return SpeechStopped(audio_end_ms=self._position_ms)
        return None

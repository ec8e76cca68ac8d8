"""Per-turn latency timeline of a call, measured on our side. Pure: the runner passes `now`.

A turn runs from the caller's end of speech (the model's `speech_stopped`) to the first agent audio
played at the caller (its first mark echo), through: first response event, first audio delta from the
model, first audio `media` sent to Twilio. Barge-in reaction (speech start -> `clear` sent) is kept too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _OpenTurn:
    speech_stopped_at: float
    response_started_at: float | None = None
    first_model_audio_at: float | None = None
    first_media_sent_at: float | None = None
    first_played_at: float | None = None
    first_mark_name: str | None = None


SEGMENTS = (
    "speech_stopped_to_response_ms",
    "speech_stopped_to_model_audio_ms",
    "speech_stopped_to_media_sent_ms",
    "speech_stopped_to_played_ms",
)


@dataclass(slots=True)
class TurnTimeline:
    turns: list[dict[str, float | None]] = field(default_factory=list)
    barge_in_reactions_ms: list[float] = field(default_factory=list)
    greeting_first_media_ms: float | None = None
    _open: _OpenTurn | None = None
    _speech_started_at: float | None = None
    _stream_started_at: float | None = None

    def stream_started(self, now: float) -> None:
        self._stream_started_at = now

    def caller_started_speaking(self, now: float) -> None:
        self._speech_started_at = now
        self._close()

    def caller_stopped_speaking(self, now: float) -> None:
        self._close()
        self._open = _OpenTurn(speech_stopped_at=now)

    def response_started(self, now: float) -> None:
        if self._open is not None and self._open.response_started_at is None:
            self._open.response_started_at = now

    def model_audio(self, now: float) -> None:
        if self._open is not None and self._open.first_model_audio_at is None:
            self._open.first_model_audio_at = now

    def media_sent(self, now: float, mark_name: str | None) -> None:
        if self.greeting_first_media_ms is None and self._stream_started_at is not None:
            self.greeting_first_media_ms = round((now - self._stream_started_at) * 1000.0, 3)
        if self._open is not None and self._open.first_media_sent_at is None:
            self._open.first_media_sent_at = now
            self._open.first_mark_name = mark_name

    def mark_played(self, name: str, now: float) -> None:
        turn = self._open
        if turn is not None and turn.first_played_at is None and turn.first_mark_name == name:
            turn.first_played_at = now
            self._close()

    def clear_sent(self, now: float) -> None:
        if self._speech_started_at is not None:
            self.barge_in_reactions_ms.append(round((now - self._speech_started_at) * 1000.0, 3))
            self._speech_started_at = None

    def finish(self) -> None:
        self._close()

    def _close(self) -> None:
        turn = self._open
        if turn is None or turn.first_media_sent_at is None:
            return
        self._open = None
        start = turn.speech_stopped_at

        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - start) * 1000.0, 3)

        self.turns.append({
            "speech_stopped_to_response_ms": ms(turn.response_started_at),
            "speech_stopped_to_model_audio_ms": ms(turn.first_model_audio_at),
            "speech_stopped_to_media_sent_ms": ms(turn.first_media_sent_at),
            "speech_stopped_to_played_ms": ms(turn.first_played_at),
        })

    def summary(self) -> dict[str, float | int | None]:
        sent = sorted(t["speech_stopped_to_media_sent_ms"] or 0.0 for t in self.turns)
        return {
            "turns": len(self.turns),
            "median_first_media_ms": sent[len(sent) // 2] if sent else None,
            "max_first_media_ms": sent[-1] if sent else None,
            "greeting_first_media_ms": self.greeting_first_media_ms,
            "barge_ins": len(self.barge_in_reactions_ms),
            "max_barge_in_reaction_ms": max(self.barge_in_reactions_ms) if self.barge_in_reactions_ms else None,
        }

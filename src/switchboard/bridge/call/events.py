"""What happened on a call, as the core sees it. Pure data: frozen dataclasses, past tense.

Audio payloads stay base64 strings: μ-law passes through untouched, so nothing decodes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """Twilio's `start`: the caller's stream is up and audio may be played to it."""

    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class CallerAudio:
    """One Twilio `media` frame (base64 μ-law, usually 20 ms)."""

    payload: str


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class PlaybackMarked:
    """Twilio echoed a mark: everything sent before it has played (or a `clear` flushed it)."""

    name: str


@dataclass(frozen=True, slots=True)
class CallerPressedKey:
    """Twilio `dtmf`: one key (`0`-`9`, `*`, `#`), one message per press. `sequence_number` is the stream's
    message counter (None if Twilio left it out): a repeat of one already seen is not a new press."""

    digit: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    """Twilio sent `stop` or its socket closed."""


@dataclass(frozen=True, slots=True)
class ModelSessionOpened:
    """The model's socket is connected and `session.created` arrived."""


@dataclass(frozen=True, slots=True)
class ModelSessionConfigured:
    """`session.updated` arrived."""


@dataclass(frozen=True, slots=True)
class ModelResponseStarted:
    response_id: str
    request_id: str | None = None


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class ModelAudio:
    """One audio delta of an assistant item (base64 μ-law)."""

    response_id: str
    item_id: str
    payload: str


@dataclass(frozen=True, slots=True)
class AssistantTranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ModelResponseDone:
    response_id: str
    status: str
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CallerStartedSpeaking:
    item_id: str | None = None
    audio_start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerStoppedSpeaking:
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallerTurnCommitted:
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallerTranscribed:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    """The model finished writing a function call (`response.function_call_arguments.done`)."""

    response_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    call_id: str
    output: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class ModelErrored:
    """An `error` event from the model. `request_id` echoes our client event id when it caused it."""

    code: str | None
    message: str
    error_type: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ModelDisconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """Twilio answered the transfer request (`ok`), or it failed."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GoodbyeRequested:
    """The server must end the call soon (drain timeout): say a short goodbye, then end."""

    reason: str


@dataclass(frozen=True, slots=True)
class ModelReconnectFailed:
    """No new model session could be opened (retries exhausted, or a fatal refusal such as a bad key)."""

    fatal: bool = False


@dataclass(frozen=True, slots=True)
class ModelTextDelta:
    """Text of an assistant item (external-TTS mode: the model writes, the TTS speaks)."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """A chunk from the external TTS (base64 μ-law, untouched) with its character alignment.

    `chars`/`char_start_ms` are relative to the chunk, as ElevenLabs sends them.
    """

    context_id: str
    payload: str
    chars: tuple[str, ...] = ()
    char_start_ms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeechFinished:
    """The external TTS finished a flushed context."""

    context_id: str


@dataclass(frozen=True, slots=True)
class SpeechFailed:
    """The external TTS is gone for this call (socket error, 4xx/5xx, timeout)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CallerAudioRetrieved:
    """`conversation.item.retrieved` for a user item: its audio (base64, session input format)."""

    item_id: str
    audio: str


@dataclass(frozen=True, slots=True)
class DeadlineReached:
    """The time returned by `next_deadline()` has come."""


CallEvent = (
    StreamStarted | CallerAudio | PlaybackMarked | CallerPressedKey | CallerHungUp | ModelSessionOpened
    | ModelSessionConfigured | ModelResponseStarted | ModelAudio | AssistantTranscriptDone | ModelResponseDone
    | CallerStartedSpeaking | CallerStoppedSpeaking | CallerTurnCommitted | CallerTranscribed
    | ToolCallRequested | ToolCallFinished | ModelErrored | ModelDisconnected | DeadlineReached
    | TransferFinished | GoodbyeRequested | ModelReconnectFailed | ModelTextDelta | SpeechAudio | SpeechFinished
    | SpeechFailed | CallerAudioRetrieved
)

"""What the core asks the adapters to do. Pure data: frozen dataclasses, imperative names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# --- to the model -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConfigureModelSession:
    """`session.update`: instructions, voice, tools, μ-law both ways, server VAD."""

    instructions: str
    voice: str
    speed: float
    tools: tuple[dict[str, Any], ...] = ()
    output_modalities: tuple[str, ...] = ("audio",)
    transcription_model: str | None = None
    # The tenant's `turn_detection` as given (None: the default server VAD, threshold 0.9).
    turn_detection: dict[str, Any] | None = None


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class AppendCallerAudio:
    payload: str


@dataclass(frozen=True, slots=True)
class RequestModelResponse:
    """`response.create`; `request_id` goes out as the event id and in the response metadata."""

    request_id: str
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class CancelModelResponse:
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TruncateModelAudio:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class DiscardCallerInput:
    """`input_audio_buffer.clear`: drop caller audio not yet committed (a key's tone, not speech)."""


@dataclass(frozen=True, slots=True)
class DeleteModelItem:
    item_id: str


@dataclass(frozen=True, slots=True)
class AddConversationItem:
    """`conversation.item.create` replaying an earlier item into a new session."""

    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReconnectModel:
    """The model socket dropped: open a new session (with backoff); the core replays the conversation."""


@dataclass(frozen=True, slots=True)
class SendToolResult:
    """`conversation.item.create` with a `function_call_output` item."""

    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class RetrieveCallerAudio:
    """`conversation.item.retrieve` for a committed user item, to transcribe it for the record."""

    item_id: str


# --- to the external TTS ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpeakText:
    """Send text to the TTS context `context_id` (opened on first use; empty text only opens it).

    Non-empty text ends on a word boundary."""

    context_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FlushSpeech:
    context_id: str


@dataclass(frozen=True, slots=True)
class StopSpeech:
    """Barge-in: close the TTS context; nothing more of it may reach the caller."""

    context_id: str


@dataclass(frozen=True, slots=True)
class TranscribeCallerAudio:
    """Transcribe a caller turn in the background (off the critical path) for the record."""

    item_id: str
    audio: str


# --- to the caller (Twilio) ---------------------------------------------------------------------
@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class PlayToCaller:
    """One Twilio `media` message; `payload` is the model's base64 μ-law, untouched."""

    payload: str


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class SendPlaybackMark:
    name: str
    item_id: str | None
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ClearCallerPlayback:
    pass


# --- to the rest of the system ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class RecordMessage:
    """A message for the App server record; `seq` orders the conversation."""

    seq: int
    role: str
    text: str
    message_id: str
    name: str | None = None
    arguments: str | None = None
    result: str | None = None
    duration_ms: float | None = None
    interrupted: bool = False
    """An assistant answer the caller cut short: `text` is what they heard."""


@dataclass(frozen=True, slots=True)
class RecordUsage:
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TransferCall:
    """Redirect the live call: Twilio REST update with `<Dial callerId=…><Number>…` (a human), optionally
    after `<Say>apology</Say>`; with no number, the apology, a callback ticket and `<Hangup/>`."""

    number: str | None
    caller_id: str | None
    apology: str | None = None
    # Warm transfer: why and what for (the model's `reason`/`summary`, or the keypad's), told to the human
    # who answers; the record's tool message (`message_id`, `seq`) later shows the outcome.
    reason: str = ""
    summary: str = ""
    message_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class EndCall:
    """End the call: close the caller's stream and the model session. Nothing runs after it."""

    reason: str


CallAction = (
    ConfigureModelSession | AppendCallerAudio | RequestModelResponse | CancelModelResponse | TruncateModelAudio
    | DeleteModelItem | DiscardCallerInput | SendToolResult | AddConversationItem | ReconnectModel | PlayToCaller | SendPlaybackMark | ClearCallerPlayback | StartToolCall
    | RecordMessage | RecordUsage | TransferCall | EndCall | RetrieveCallerAudio | SpeakText | FlushSpeech | StopSpeech
    | TranscribeCallerAudio
)

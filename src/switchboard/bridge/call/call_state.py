"""CallState: the state one call's core keeps, and the bookkeeping all its parts share.

The records (audio queued for the caller, tool runs, assistant items, external speech, a pending exit), the
conversation record and what a new model session is told, the queue of response requests, and the phase.
The parts of the core are mixins over this class (caller_side.py, model_session.py, external_speech.py,
model_responses.py, tool_calls.py); state_machine.py combines them. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from switchboard.bridge.call.actions import (
    AddConversationItem,
    CallAction,
    ConfigureModelSession,
    EndCall,
    RecordMessage,
    RequestModelResponse,
)
from switchboard.bridge.call.keypad import KeypadGatherer
from switchboard.bridge.call.phases import ALLOWED_TRANSITIONS, CallPhase, InvalidTransition
from switchboard.bridge.call.playback import PlaybackLedger
from switchboard.bridge.call.recent import RecentMap, RecentSet
from switchboard.bridge.call.settings import CallSettings


@dataclass(slots=True)
class QueuedAudio:
    response_id: str | None
    item_id: str | None
    payload: str
    duration_ms: float


@dataclass(slots=True)
class ToolRun:
    call_id: str
    name: str
    arguments: str
    response_id: str
    started_at: float
    seq: int
    next_thinking_at: float
    generation: int = 0  # the model session that asked for it


@dataclass(slots=True)
class AssistantItem:
    item_id: str
    response_id: str
    seq: int
    transcript: str | None = None
    recorded: bool = False
    interrupted: bool = False
    heard_ms: float = 0.0
    # All audio the model produced for the item (sent, queued, or arriving after a cancel): what a record
    # cut at the heard fraction is measured against.
    produced_ms: float = 0.0
    # No more audio will come for it: its transcript is done, a later item of its response has audio, or
    # its response is done.
    audio_complete: bool = False
    generation: int = 0  # the model session it belongs to; older sessions never hear about it
    # Still playing when a new session replaced the old one: the text replayed there, under our own id.
    replay_id: str | None = None
    replay_generation: int = -1


@dataclass(slots=True)
class SpeechContext:
    """One response spoken by the external TTS (context id = response id)."""

    context_id: str
    item_id: str
    pending_text: str = ""  # text not yet sent (waiting for a word boundary)
    text_sent: str = ""
    flushed: bool = False
    finished: bool = False
    audio_ms: float = 0.0
    # (absolute start ms, char) of every character spoken so far, from the TTS alignment
    spoken: list[tuple[float, str]] = field(default_factory=list)


@dataclass(slots=True)
class PendingExit:
    """The call will end (or be transferred) once a last line has been heard.

    Stages: wait_response (the response that asked for it is still running), pending (our line is
    queued), after_response (our line was requested), after_playback (waiting for the audio to play),
    transferring (the transfer request is out).
    """

    kind: str  # end_call | inactivity | transfer
    stage: str
    holding_response: str | None = None


@dataclass(slots=True)
class CallStats:
    caller_frames: int = 0
    caller_frames_dropped: int = 0
    model_audio_ms: float = 0.0
    model_audio_dropped_ms: float = 0.0
    barge_ins: int = 0
    tool_calls: int = 0
    model_errors: int = 0
    usage: dict[str, Any] = field(default_factory=dict)


class CallState:
    """The state of one call's core, and the bookkeeping its parts share. See the module docstring."""

    def __init__(self, settings: CallSettings, *, call_sid: str | None = None) -> None:
        self.settings = settings
        self.call_sid = call_sid
        self.stream_sid: str | None = None
        self._phase = CallPhase.CONNECTING
        self._end_reason: str | None = None
        self._ledger = PlaybackLedger()
        self._stats = CallStats()

        self._model_open = False
        self._buffered_caller_audio: deque[str] = deque()
        self._buffered_caller_ms = 0.0

        # Responses: one may be active; requests wait until none is.
        self._active_response_id: str | None = None
        self._inflight_request: RequestModelResponse | None = None
        self._last_sent_request: RequestModelResponse | None = None
        self._pending_requests: deque[RequestModelResponse] = deque()
        self._request_counter = 0
        # Ids of finished responses and items are kept only for a while: memory stays flat on long calls.
        self._cancelled_responses: RecentSet[str] = RecentSet(256)
        self._responses_with_audio: RecentSet[str] = RecentSet(256)
        self._responses_with_speech: RecentSet[str] = RecentSet(256)
        self._unspoken_responses: dict[str, str] = {}

        # Playback pacing toward Twilio.
        self._queue: deque[QueuedAudio] = deque()
        # Audio sent since the last mark (marks go out every mark_interval_ms and after a response's end).
        self._unmarked_ms = 0.0
        self._unmarked_item: str | None = None
        self._unmarked_response: str | None = None
        self._play_end_estimate = 0.0
        self._playing_items: dict[str, AssistantItem] = {}
        self._interrupted_items: RecentMap[str, AssistantItem] = RecentMap(64)
        # Items that first showed up after their response was cancelled: never heard, deleted, never recorded.
        self._unheard_items: RecentSet[str] = RecentSet(64)
        # Counts model sessions; an item belongs to the one that produced it.
        self._generation = 0
        self._replay_counter = 0

        # Tools.
        self._tools: dict[str, ToolRun] = {}
        self._tool_results: list[CallAction] = []  # SendToolResult, each maybe after its call re-created

        # Conversation record order.
        self._seq = 0
        self._user_seq: RecentMap[str, int] = RecentMap(256)

        # Watchdogs.
        self._stream_started_at: float | None = None
        self._wrap_up_sent = False
        self._caller_speaking = False
        self._silence_since: float | None = None
        self._inactivity_stage = 0  # 0 normal, 1 prompted, 2 saying goodbye
        self._exit: PendingExit | None = None
        self._last_now = 0.0

        # Model session recovery: what was said, to replay into a new session.
        self._greeted = False
        # Keys typed before the first session opened: added after the greeting's response.create, so the
        # caller hears the greeting first and the model answers the digits next.
        self._items_after_greeting: list[dict[str, Any]] = []
        self._greeting_request_id: str | None = None
        self._reconnecting = False
        self._resume_after_reconnect = False
        # What a new session is told after a drop: the recent conversation (older turns are let go).
        self._history: RecentMap[str, tuple[int, dict[str, Any]]] = RecentMap(400)
        self._next_thinking_at: float | None = None
        self._model_opened_at: float | None = None

        # External TTS (ElevenLabs mode) and transcription for the record.
        self._tts_mode = settings.external_tts
        self._speech: RecentMap[str, SpeechContext] = RecentMap(32)
        self._unspoken_after_failure: list[str] = []

        # Keypad and the transfer's hand-over note (reason, summary, record message id, seq).
        self._keypad = KeypadGatherer(pause_s=settings.dtmf_pause_s, shortcuts=dict(settings.keypad),
                                      tone_guard_s=settings.keypad_tone_guard_s)
        self._transfer_note: tuple[str, str, str | None, int | None] = ("", "", None, None)

    # ------------------------------------------------------------------ public surface
    @property
    def phase(self) -> CallPhase:
        return self._phase

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    @property
    def is_model_speaking(self) -> bool:
        return self._active_response_id is not None

    @property
    def has_unplayed_audio(self) -> bool:
        return (
            bool(self._queue) or self._ledger.has_unplayed_audio or self._unmarked_ms > 0
            or any(not ctx.finished for ctx in self._speech.values())
        )

    def stats(self) -> CallStats:
        return self._stats

    # ------------------------------------------------------------------ shared bookkeeping
    def _remember(self, seq: int, key: str, item: dict[str, Any]) -> None:
        """Keep a conversation item to replay into a new model session after a drop."""
        self._history[key] = (seq, item)

    def _session_config(self) -> ConfigureModelSession:
        s = self.settings
        return ConfigureModelSession(
            instructions=s.instructions, voice=s.voice, speed=s.speed, tools=s.tools,
            output_modalities=("text",) if self._tts_mode else s.output_modalities,
            transcription_model=s.transcription_model, turn_detection=s.turn_detection,
        )

    def _heard_text(self, item: AssistantItem) -> str | None:
        ctx = self._speech.get(item.response_id)
        if ctx is None:
            return None
        return "".join(char for start_ms, char in ctx.spoken if start_ms < item.heard_ms).strip()

    def _queue_request(self, instructions: str | None, *, front: bool = False) -> None:
        self._request_counter += 1
        request = RequestModelResponse(request_id=f"sb_req_{self._request_counter}", instructions=instructions)
        if front:
            self._pending_requests.appendleft(request)
        else:
            self._pending_requests.append(request)

    def _send_next_request(self, out: list[CallAction]) -> None:
        if (
            not self._model_open
            or not self._pending_requests
            or self._active_response_id is not None
            or self._inflight_request is not None
        ):
            return
        request = self._pending_requests.popleft()
        if self._items_after_greeting and request.request_id != self._greeting_request_id:
            out.extend(AddConversationItem(item) for item in self._items_after_greeting)
            self._items_after_greeting = []
        self._inflight_request = request
        self._last_sent_request = request
        out.append(request)
        if self._exit is not None and self._exit.stage == "pending":
            self._exit.stage = "after_response"

    def _item_has_queued_audio(self, item_id: str) -> bool:
        return any(q.item_id == item_id for q in self._queue)

    def _record_assistant(self, item: AssistantItem, out: list[CallAction], *, final: bool = True) -> None:
        if item.transcript is None:
            return
        text = item.transcript
        if item.interrupted:
            text = cut_transcript(text, item.heard_ms, item.produced_ms)
        out.append(RecordMessage(seq=item.seq, role="assistant", text=text, message_id=f"assistant:{item.item_id}",
                                 interrupted=item.interrupted))
        if text:
            self._remember(item.seq, f"assistant:{item.item_id}", {
                "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
        item.recorded = final

    def _is_ended(self) -> bool:
        return self._phase is CallPhase.ENDED

    def _record_heard(self, item: AssistantItem, text: str, out: list[CallAction]) -> None:
        out.append(RecordMessage(seq=item.seq, role="assistant", text=text, message_id=f"assistant:{item.item_id}",
                                 interrupted=True))
        item.recorded = True
        if text:
            self._remember(item.seq, f"assistant:{item.item_id}", {
                "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})

    def _user_seq_of(self, item_id: str) -> int:
        seq = self._user_seq.get(item_id)
        if seq is None:
            seq = self._next_seq()
            self._user_seq[item_id] = seq
        return seq

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _transition(self, phase: CallPhase) -> None:
        if phase is self._phase:
            return
        if phase not in ALLOWED_TRANSITIONS[self._phase]:
            raise InvalidTransition(f"{self._phase.value} -> {phase.value}")
        self._phase = phase

    def _end(self, reason: str, out: list[CallAction]) -> None:
        if self._phase is CallPhase.ENDED:
            return
        # Whatever was said and not yet cut by a barge-in stays recorded as it is.
        self._end_reason = reason
        self._phase = CallPhase.ENDED
        out.append(EndCall(reason))


def cut_transcript(text: str, heard_ms: float, produced_ms: float) -> str:
    """The part of `text` the caller heard, cut on the word boundary nearest the heard fraction.

    `produced_ms` is all the audio the model produced for the item (not what was forwarded so far): the
    transcript covers that audio, and speech rate is taken as even across it.
    """
    if produced_ms <= 0 or heard_ms <= 0:
        return ""
    if heard_ms >= produced_ms:
        return text
    words = text.split()
    keep = min(len(words), int(len(words) * heard_ms / produced_ms + 0.5))
    return " ".join(words[:keep]) + ("…" if keep < len(words) else "")

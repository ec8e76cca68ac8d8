"""CallStateMachine: one phone call's behaviour as a pure function of events and time.

`handle(event, now)` takes one event and the current monotonic time and returns the actions to
perform, in order; `next_deadline()` says when it next needs a `DeadlineReached`. It never awaits,
never touches a socket and never reads a clock, so two events can't interleave and tests pass
literal times. A misbehaving peer produces actions (or nothing), never an exception.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from switchboard.bridge.call.actions import (
    AddConversationItem,
    AppendCallerAudio,
    CallAction,
    CancelModelResponse,
    ClearCallerPlayback,
    ConfigureModelSession,
    DeleteModelItem,
    DiscardCallerInput,
    EndCall,
    FlushSpeech,
    PlayToCaller,
    ReconnectModel,
    RecordMessage,
    RecordUsage,
    RequestModelResponse,
    RetrieveCallerAudio,
    SendPlaybackMark,
    SendToolResult,
    SpeakText,
    StartToolCall,
    StopSpeech,
    TranscribeCallerAudio,
    TransferCall,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudio,
    CallerAudioRetrieved,
    CallerHungUp,
    CallerPressedKey,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CallerTranscribed,
    CallerTurnCommitted,
    CallEvent,
    DeadlineReached,
    GoodbyeRequested,
    ModelAudio,
    ModelDisconnected,
    ModelErrored,
    ModelReconnectFailed,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionConfigured,
    ModelSessionOpened,
    ModelTextDelta,
    PlaybackMarked,
    SpeechAudio,
    SpeechFailed,
    SpeechFinished,
    StreamStarted,
    ToolCallFinished,
    ToolCallRequested,
    TransferFinished,
)
from switchboard.bridge.call.keypad import KEYS, DigitsEntered, KeypadGatherer, KeypadOutcome, keypad_message
from switchboard.bridge.call.phases import ALLOWED_TRANSITIONS, CallPhase, InvalidTransition
from switchboard.bridge.call.playback import PlaybackLedger, mulaw_ms_of_base64
from switchboard.bridge.call.recent import RecentMap, RecentSet

# Errors the model sends during ordinary races; they never end a call.
BENIGN_MODEL_ERRORS = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
# Errors after which the session is useless.
FATAL_MODEL_ERRORS = frozenset({"session_expired", "invalid_api_key", "insufficient_quota", "beta_api_shape_disabled"})

END_CALL_TOOL = "end_call"
TRANSFER_TOOL = "transfer_to_human"


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Everything the core needs to know about one call, fixed at its start."""

    instructions: str = ""
    greeting: str = ""
    voice: str = "marin"
    speed: float = 1.0
    tools: tuple[dict[str, Any], ...] = ()
    output_modalities: tuple[str, ...] = ("audio",)
    transcription_model: str | None = None
    # The model writes text and an external TTS (ElevenLabs) speaks it; False speaks with the model's voice.
    external_tts: bool = False
    # Transcribe each caller turn for the record from the model's copy of its audio (cartesia/elevenlabs).
    transcribe_caller_audio: bool = False
    # Twilio's unplayed buffer is kept at most this far ahead of real time, so a `clear` discards little.
    playback_lead_ms: float = 300.0
    # A mark at most every this many ms of audio (0: after every media), and always after a response's last.
    mark_interval_ms: float = 0.0
    # Caller audio held while the model session is not up yet (never dropped below this bound).
    max_buffered_caller_ms: float = 10_000.0
    inactivity_prompt_s: float = 30.0
    inactivity_hangup_s: float = 30.0
    max_call_s: float = 1800.0
    wrap_up_s: float = 60.0
    thinking_delay_s: float = 0.5
    thinking_interval_s: float = 3.0
    tool_timeout_s: float = 15.0
    thinking_sound: tuple[str, ...] = ()  # base64 μ-law chunks
    # On a dropped model socket: reconnect and replay (the runner retries; see ModelReconnectFailed).
    reconnect_model: bool = True
    # The provider ends a session after 60 minutes: recycle it before, between responses.
    model_session_max_s: float = 3300.0
    # System lines carry a quoted sentence: a real model paraphrases it, the local engine speaks it.
    still_there_prompt: str = 'The caller has been silent for a while. Ask briefly: "Are you still there?"'
    inactivity_goodbye: str = (
        'The caller is still silent. Say a short, polite goodbye, for example: "I haven\'t heard from you, so '
        'I\'ll end the call now. Thanks for calling, goodbye!"'
    )
    wrap_up_prompt: str = (
        "The call is about to reach its time limit. Politely wrap up now: summarise what was done, and if the "
        "caller's need is still open, offer a callback ticket. For example: \"We're almost out of time on this "
        "call. If there's anything still open, I can have a colleague call you back.\""
    )
    end_call_goodbye: str = 'Say a brief, friendly goodbye, for example: "Thanks for calling, goodbye!"'
    model_lost_apology: str = (
        "I'm sorry, we're having technical trouble on this line."
    )
    resume_after_reconnect: str = (
        'The line dropped for a moment. Briefly apologise and continue where you left off, for example: '
        '"Sorry about that, the line cut out for a moment."'
    )
    shutdown_goodbye: str = (
        'We must end the call now. Apologise briefly and say goodbye, for example: "I\'m sorry, I have to end '
        'our call now. Please call back anytime. Goodbye!"'
    )
    transfer_number: str | None = None
    transfer_caller_id: str | None = None
    # Keypad (bridge/call/keypad.py): the pause that ends a run of digits, and the tenant's shortcuts.
    dtmf_pause_s: float = 2.0
    keypad: tuple[tuple[str, str], ...] = ()
    # After a key, caller audio events are taken for its tone (Twilio plays it into the inbound audio).
    keypad_tone_guard_s: float = 1.0
    keypad_transfer_line: str = "Transferring you to a colleague now, please hold."
    # The tenant's `turn_detection`, sent as given (None: server VAD, threshold 0.9).
    turn_detection: dict[str, Any] | None = None
    transfer_line: str = (
        'Tell the caller in one short sentence that you are transferring them now, for example: "I\'m '
        'transferring you to a colleague now, please hold."'
    )
    transfer_failed_line: str = (
        "The transfer to a colleague failed. Apologise briefly and offer a callback ticket, for example: "
        "\"Sorry, I couldn't reach a colleague just now. I can have someone call you back instead.\""
    )


@dataclass(slots=True)
class _QueuedAudio:
    response_id: str | None
    item_id: str | None
    payload: str
    duration_ms: float


@dataclass(slots=True)
class _ToolRun:
    call_id: str
    name: str
    arguments: str
    response_id: str
    started_at: float
    seq: int
    next_thinking_at: float
    generation: int = 0  # the model session that asked for it


@dataclass(slots=True)
class _AssistantItem:
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
class _SpeechContext:
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
class _PendingExit:
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


class CallStateMachine:
    """The sans-I/O core of one call. See the module docstring."""

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
        self._queue: deque[_QueuedAudio] = deque()
        # Audio sent since the last mark (marks go out every mark_interval_ms and after a response's end).
        self._unmarked_ms = 0.0
        self._unmarked_item: str | None = None
        self._unmarked_response: str | None = None
        self._play_end_estimate = 0.0
        self._playing_items: dict[str, _AssistantItem] = {}
        self._interrupted_items: RecentMap[str, _AssistantItem] = RecentMap(64)
        # Items that first showed up after their response was cancelled: never heard, deleted, never recorded.
        self._unheard_items: RecentSet[str] = RecentSet(64)
        # Counts model sessions; an item belongs to the one that produced it.
        self._generation = 0
        self._replay_counter = 0

        # Tools.
        self._tools: dict[str, _ToolRun] = {}
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
        self._exit: _PendingExit | None = None
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
        self._speech: RecentMap[str, _SpeechContext] = RecentMap(32)
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

    def handle(self, event: CallEvent, now: float) -> list[CallAction]:
        """Feed one event; returns the actions to perform in order. After EndCall, returns []."""
        if self._phase is CallPhase.ENDED:
            return []
        if type(event) is CallerAudio and self._model_open:
            # The hot path (50 frames a second): caller audio changes no state and no deadline.
            self._stats.caller_frames += 1
            return [AppendCallerAudio(event.payload)]
        out: list[CallAction] = []
        self._last_now = now
        self._dispatch(event, now, out)
        if not self._is_ended():
            self._release_audio(now, out)
            self._flush_tool_results(out)
            self._send_next_request(out)
            self._check_exit(out)
            self._update_silence(now)
        return out

    def next_deadline(self) -> float | None:
        """The monotonic time at which the core next needs `DeadlineReached`, or None."""
        if self._phase is CallPhase.ENDED:
            return None
        candidates: list[float] = []
        if self._queue and self.stream_sid is not None:
            candidates.append(self._play_end_estimate - self.settings.playback_lead_ms / 1000.0)
        for run in self._tools.values():
            candidates.append(run.started_at + self.settings.tool_timeout_s)
        if self._next_thinking_at is not None and self.settings.thinking_sound:
            candidates.append(self._next_thinking_at)
        if self._model_opened_at is not None and self._model_open and self._stream_started_at is not None:
            candidates.append(self._model_opened_at + self.settings.model_session_max_s)
        keypad_deadline = self._keypad.next_deadline()
        if keypad_deadline is not None:
            candidates.append(keypad_deadline)
        if self._stream_started_at is not None:
            cap = self._stream_started_at + self.settings.max_call_s
            candidates.append(cap)
            if not self._wrap_up_sent and self.settings.wrap_up_s > 0:
                candidates.append(cap - self.settings.wrap_up_s)
        if self._silence_since is not None and self._exit is None:
            if self._inactivity_stage == 0:
                candidates.append(self._silence_since + self.settings.inactivity_prompt_s)
            elif self._inactivity_stage == 1:
                candidates.append(self._silence_since + self.settings.inactivity_hangup_s)
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, event: CallEvent, now: float, out: list[CallAction]) -> None:
        match event:
            case CallerAudio(payload=payload):
                self._on_caller_audio(payload, out)
            case ModelAudio():
                self._on_model_audio(event, out)
            case PlaybackMarked(name=name):
                self._on_marked(name, now)
            case StreamStarted():
                self._on_stream_started(event, now)
            case ModelSessionOpened():
                self._model_opened_at = now
                self._on_model_opened(out)
            case ModelSessionConfigured():
                pass
            case ModelResponseStarted():
                unrequested = event.request_id is None and self._inflight_request is None
                self._on_response_started(event)
                if unrequested and self._keypad.is_tone_guarded(now):
                    # The model answering a key's tone (server VAD): the keypad's own message follows.
                    out.append(CancelModelResponse(event.response_id))
                    self._cancelled_responses.add(event.response_id)
            case ModelResponseDone():
                self._on_response_done(event, out)
            case AssistantTranscriptDone():
                self._on_transcript_done(event, out)
            case CallerStartedSpeaking():
                # A key's tone is not speech: the key press already interrupted (and the silence clock runs on).
                if not self._keypad.is_tone_guarded(now):
                    self._on_caller_started_speaking(now, out)
            case CallerStoppedSpeaking():
                self._caller_speaking = False
            case CallerTurnCommitted(item_id=item_id) if self._keypad.is_tone_guarded(now):
                out.append(DeleteModelItem(item_id))  # a key's tone, not words: keep it out of the conversation
            case CallerTurnCommitted(item_id=item_id):
                self._user_seq_of(item_id)
                if self.settings.transcribe_caller_audio:
                    out.append(RetrieveCallerAudio(item_id))
            case CallerTranscribed(item_id=item_id, transcript=text):
                seq = self._user_seq_of(item_id)
                if text.strip():
                    out.append(RecordMessage(seq=seq, role="user", text=text.strip(), message_id=f"user:{item_id}"))
                    self._remember(seq, f"user:{item_id}", {
                        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text.strip()}]})
            case ToolCallRequested():
                self._on_tool_requested(event, now, out)
            case ToolCallFinished():
                self._on_tool_finished(event, now, out)
            case ModelErrored():
                self._on_model_error(event, out)
            case ModelDisconnected():
                self._on_model_disconnected(now, out)
            case ModelReconnectFailed():
                self._on_model_lost(out)
            case CallerHungUp():
                self._end("caller_hung_up", out)
            case CallerPressedKey(digit=digit):
                self._on_key(digit, now, out)
            case DeadlineReached():
                self._on_deadline(now, out)
            case TransferFinished():
                self._on_transfer_finished(event, out)
            case GoodbyeRequested(reason=reason):
                self._on_goodbye_requested(reason)
            case ModelTextDelta():
                self._on_text_delta(event, out)
            case SpeechAudio():
                self._on_speech_audio(event)
            case SpeechFinished():
                self._on_speech_finished(event)
            case SpeechFailed():
                self._on_speech_failed(event, out)
            case CallerAudioRetrieved(item_id=item_id, audio=audio):
                if self.settings.transcribe_caller_audio and audio:
                    out.append(TranscribeCallerAudio(item_id=item_id, audio=audio))

    # ------------------------------------------------------------------ caller side
    def _on_caller_audio(self, payload: str, out: list[CallAction]) -> None:
        self._stats.caller_frames += 1
        if self._model_open:
            out.append(AppendCallerAudio(payload))
            return
        # Hold the audio until session.update has gone out; drop the oldest past the bound.
        self._buffered_caller_audio.append(payload)
        self._buffered_caller_ms += mulaw_ms_of_base64(payload)
        while self._buffered_caller_ms > self.settings.max_buffered_caller_ms and self._buffered_caller_audio:
            dropped = self._buffered_caller_audio.popleft()
            self._buffered_caller_ms -= mulaw_ms_of_base64(dropped)
            self._stats.caller_frames_dropped += 1

    def _on_stream_started(self, event: StreamStarted, now: float) -> None:
        if self.stream_sid is not None:
            return  # a second `start` changes nothing
        self.stream_sid = event.stream_sid
        self.call_sid = self.call_sid or event.call_sid
        self._stream_started_at = now
        self._play_end_estimate = now
        if self._model_open:
            self._transition(CallPhase.ACTIVE)

    def _on_marked(self, name: str, now: float) -> None:
        mark = self._ledger.record_marked(name, now)
        if mark is None:
            return
        if not self._ledger.has_unplayed_audio:
            # Everything sent has played: resynchronise the estimate with reality.
            self._play_end_estimate = min(self._play_end_estimate, now)
        # An item done and heard to its end needs no more watching (cheap tests first: this runs per echo).
        for item in list(self._playing_items.values()):
            if (
                item.transcript is not None
                and item.response_id != self._active_response_id
                and not self._item_has_queued_audio(item.item_id)
                and self._ledger.heard_ms(item.item_id, now) >= self._ledger.sent_ms(item.item_id)
            ):
                self._playing_items.pop(item.item_id)

    def _on_caller_started_speaking(self, now: float, out: list[CallAction]) -> None:
        self._caller_speaking = True
        # The caller is there and has something to say: no inactivity and no pending hang-up.
        self._inactivity_stage = 0
        if self._exit is not None and self._exit.kind in {"end_call", "inactivity"}:
            self._exit = None
        # Barge-in: all in this tick. Twilio first (what the caller hears), then the model.
        interrupted = bool(self._queue) or self._ledger.has_unplayed_audio or self._active_response_id is not None
        out.append(ClearCallerPlayback())
        # Where playback of each item stands now: read before the clear, which ends playback there.
        heard_by_item = {item_id: self._ledger.heard_ms(item_id, now) for item_id in self._playing_items}
        self._ledger.record_cleared(now)
        self._unmarked_ms = 0.0
        # Twilio's buffer is empty now: the next answer may start playing at once.
        self._play_end_estimate = min(self._play_end_estimate, now)
        for queued in self._queue:
            self._stats.model_audio_dropped_ms += queued.duration_ms
        self._queue.clear()
        if not interrupted:
            return
        self._stats.barge_ins += 1
        if self._active_response_id is not None:
            out.append(CancelModelResponse(self._active_response_id))
            self._cancelled_responses.add(self._active_response_id)
        for ctx in self._speech.values():
            if not ctx.finished:
                # The external TTS stops in the same tick; nothing more of this answer may play.
                ctx.finished = True
                self._cancelled_responses.add(ctx.context_id)
                out.append(StopSpeech(ctx.context_id))
        for item in list(self._playing_items.values()):
            heard_ms = heard_by_item.get(item.item_id, 0.0)
            if item.audio_complete and heard_ms >= item.produced_ms - 0.5:
                # Heard whole (e.g. the preamble before the answer that is being interrupted): left alone.
                self._playing_items.pop(item.item_id)
                continue
            item.interrupted = True
            item.heard_ms = heard_ms
            # Only the session that made the item knows it: after a reconnect the new one is told nothing.
            tell_model = self._model_open and item.generation == self._generation
            heard_text = self._heard_text(item)
            if heard_text is not None:
                # A text item spoken by the TTS: replace it with what the caller heard (delete + create).
                item.transcript = heard_text
                if tell_model:
                    out.append(DeleteModelItem(item_id=item.item_id))
                    if heard_text:
                        out.append(AddConversationItem({
                            "type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": heard_text}]}))
                self._record_heard(item, heard_text, out)
                self._playing_items.pop(item.item_id)
                self._interrupted_items[item.item_id] = item
                continue
            if tell_model:
                if heard_ms >= 1:
                    out.append(TruncateModelAudio(item_id=item.item_id, audio_end_ms=int(heard_ms)))
                else:
                    out.append(DeleteModelItem(item_id=item.item_id))
            elif self._model_open and item.replay_id is not None and item.replay_generation == self._generation:
                # The new session holds our replay of the whole text: replace it with the part that was heard.
                out.append(DeleteModelItem(item_id=item.replay_id))
                heard_part = cut_transcript(item.transcript or "", heard_ms, item.produced_ms)
                if heard_part:
                    out.append(AddConversationItem({
                        "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": heard_part}]}))
            self._record_assistant(item, out)
            self._playing_items.pop(item.item_id)
            self._interrupted_items[item.item_id] = item

    def _on_key(self, digit: str, now: float, out: list[CallAction]) -> None:
        if digit not in KEYS:
            return
        # A key press interrupts exactly as speech does (clear, cancel, truncate), in this tick.
        self._on_caller_started_speaking(now, out)
        self._caller_speaking = False
        if self._model_open:
            out.append(DiscardCallerInput())  # the key's tone, if it reached the audio, is not speech
        outcome = self._keypad.press(digit, now)
        if outcome is not None:
            self._on_keypad(outcome, out)

    def _on_keypad(self, outcome: KeypadOutcome, out: list[CallAction]) -> None:
        s = self.settings
        if not isinstance(outcome, DigitsEntered):
            if outcome.action == "transfer" and s.transfer_number:
                if self._exit is not None and self._exit.kind == "transfer":
                    return
                # At once, without the model: Twilio says the line, then dials.
                seq = self._next_seq()
                message_id = f"tool:keypad-{seq}"
                reason = f"The caller pressed {outcome.key} on the keypad to reach a person."
                result = json.dumps({"ok": True, "status": "transferring"})
                out.append(RecordMessage(
                    seq=seq, role="tool", text=TRANSFER_TOOL, message_id=message_id, name=TRANSFER_TOOL,
                    arguments=json.dumps({"reason": reason, "key": outcome.key}), result=result, duration_ms=0.0))
                self._exit = _PendingExit(kind="transfer", stage="transferring")
                out.append(TransferCall(number=s.transfer_number, caller_id=s.transfer_caller_id,
                                        apology=s.keypad_transfer_line, reason=reason, message_id=message_id, seq=seq))
                return
            outcome = DigitsEntered(digits=outcome.key, first_pressed_at=self._last_now)
        text = keypad_message(outcome.digits)
        seq = self._next_seq()
        message_id = f"keypad:{seq}"
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        out.append(RecordMessage(seq=seq, role="user", text=text, message_id=message_id))
        self._remember(seq, message_id, item)
        if self._items_after_greeting:
            self._items_after_greeting.append(item)  # keeps its place after the digits typed earlier
        elif self._model_open:
            out.append(AddConversationItem(item))
        self._queue_request(None)  # sent once no response is active: never two at once

    # ------------------------------------------------------------------ model side
    def _on_model_opened(self, out: list[CallAction]) -> None:
        if self._model_open:
            return
        self._model_open = True
        self._generation += 1
        s = self.settings
        out.append(self._session_config())
        if not self._reconnecting:
            # Keys typed before the first session opened: the only conversation there is yet. With a
            # greeting to say, they follow its response.create (see _send_next_request).
            early = [item for _, item in sorted(self._history.values(), key=lambda entry: entry[0])]
            if s.greeting and not self._greeted:
                self._items_after_greeting = early
            else:
                out.extend(AddConversationItem(item) for item in early)
        if self._reconnecting:
            # A new session after a drop: replay the conversation so far, then carry on.
            self._reconnecting = False
            if not self._tools:
                self._next_thinking_at = None
            for key, (_, item) in sorted(self._history.items(), key=lambda entry: entry[1][0]):
                playing = self._playing_items.get(key.removeprefix("assistant:")) if key.startswith("assistant:") else None
                if playing is not None:
                    # Still playing: replayed whole under an id of ours, so a barge-in can replace it later.
                    self._replay_counter += 1
                    playing.replay_id = f"sb_replay_{self._replay_counter}"
                    playing.replay_generation = self._generation
                    item = {**item, "id": playing.replay_id}
                out.append(AddConversationItem(item))
            if self._resume_after_reconnect:
                self._resume_after_reconnect = False
                self._queue_request(s.resume_after_reconnect, front=True)
            self._send_next_request(out)
        elif s.greeting and not self._greeted:
            self._greeted = True
            # First, ahead of any keys typed before the session opened.
            self._queue_request(
                f"The call has just been answered. Greet the caller with exactly this sentence: \"{s.greeting}\"",
                front=True,
            )
            self._greeting_request_id = self._pending_requests[0].request_id
            self._send_next_request(out)
        while self._buffered_caller_audio:
            out.append(AppendCallerAudio(self._buffered_caller_audio.popleft()))
        self._buffered_caller_ms = 0.0
        if self.stream_sid is not None:
            self._transition(CallPhase.ACTIVE)

    def _on_model_disconnected(self, now: float, out: list[CallAction]) -> None:
        if not self.settings.reconnect_model:
            self._end("model_disconnected", out)
            return
        if self._reconnecting:
            return
        self._reconnecting = True
        self._model_open = False
        self._items_after_greeting = []  # they are in the history the new session replays
        # The response in flight died with the socket; its audio already here still plays.
        if self._active_response_id is not None or self._inflight_request is not None:
            self._resume_after_reconnect = True
            if self._inflight_request is not None:
                self._pending_requests.appendleft(self._inflight_request)
        self._active_response_id = None
        self._inflight_request = None
        if self._next_thinking_at is None:
            self._next_thinking_at = now + self.settings.thinking_delay_s
        out.append(ReconnectModel())

    def _recycle_model_session(self, now: float, out: list[CallAction]) -> None:
        """Swap in a fresh session between responses; if one is running, try again shortly."""
        busy = (
            self._active_response_id is not None or self._inflight_request is not None or bool(self._tools)
            or self._caller_speaking
        )
        if busy:
            # Re-check in a second: move the session's start so the deadline falls then.
            self._model_opened_at = now + 1.0 - self.settings.model_session_max_s
            return
        self._reconnecting = True
        self._model_open = False
        self._items_after_greeting = []  # replayed with the history
        out.append(ReconnectModel())

    def _on_model_lost(self, out: list[CallAction]) -> None:
        """No model session could be had: apologise (Twilio speaks it) and hand over to a human or a callback."""
        self._reconnecting = False
        self._next_thinking_at = None
        self._queue.clear()
        s = self.settings
        if s.transfer_number:
            apology = s.model_lost_apology + " Let me transfer you to a colleague."
            self._exit = _PendingExit(kind="transfer", stage="transferring")
            out.append(TransferCall(number=s.transfer_number, caller_id=s.transfer_caller_id, apology=apology))
        else:
            apology = s.model_lost_apology + " We will call you back as soon as possible. Goodbye."
            self._exit = _PendingExit(kind="model_unavailable", stage="transferring")
            out.append(TransferCall(number=None, caller_id=None, apology=apology))

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

    # ------------------------------------------------------------------ external TTS
    def _on_text_delta(self, event: ModelTextDelta, out: list[CallAction]) -> None:
        if not self._tts_mode or event.response_id in self._cancelled_responses:
            if not self._tts_mode and event.response_id in self._unspoken_responses:
                self._unspoken_responses[event.response_id] += event.delta
            return
        ctx = self._speech.get(event.response_id)
        if ctx is None:
            ctx = _SpeechContext(context_id=event.response_id, item_id=event.item_id)
            self._speech[event.response_id] = ctx
            # Open the TTS context at once (empty text): its set-up overlaps the first word being written.
            out.append(SpeakText(ctx.context_id, ""))
            if event.item_id not in self._playing_items:
                self._playing_items[event.item_id] = _AssistantItem(
                    item_id=event.item_id, response_id=event.response_id, seq=self._next_seq(),
                    generation=self._generation)
        self._responses_with_speech.add(event.response_id)
        ctx.pending_text += event.delta
        cut = ctx.pending_text.rfind(" ")
        if cut >= 0:
            text, ctx.pending_text = ctx.pending_text[: cut + 1], ctx.pending_text[cut + 1:]
            if text.strip():
                ctx.text_sent += text
                out.append(SpeakText(ctx.context_id, text))

    def _flush_speech(self, response_id: str, out: list[CallAction]) -> None:
        ctx = self._speech.get(response_id)
        if ctx is None or ctx.flushed or response_id in self._cancelled_responses:
            return
        if ctx.pending_text.strip():
            text = ctx.pending_text.rstrip() + " "
            ctx.text_sent += text
            out.append(SpeakText(ctx.context_id, text))
        ctx.pending_text = ""
        ctx.flushed = True
        out.append(FlushSpeech(ctx.context_id))

    def _on_speech_audio(self, event: SpeechAudio) -> None:
        ctx = self._speech.get(event.context_id)
        duration_ms = mulaw_ms_of_base64(event.payload)
        if ctx is None or event.context_id in self._cancelled_responses or ctx.finished:
            self._stats.model_audio_dropped_ms += duration_ms
            return
        for char, start_ms in zip(event.chars, event.char_start_ms, strict=False):
            ctx.spoken.append((ctx.audio_ms + start_ms, char))
        ctx.audio_ms += duration_ms
        item = self._playing_items.get(ctx.item_id)
        if item is not None:
            item.produced_ms += duration_ms
        self._stats.model_audio_ms += duration_ms
        self._responses_with_audio.add(event.context_id)
        self._queue.append(_QueuedAudio(event.context_id, ctx.item_id, event.payload, duration_ms))

    def _on_speech_finished(self, event: SpeechFinished) -> None:
        ctx = self._speech.get(event.context_id)
        if ctx is not None:
            ctx.finished = True
            item = self._playing_items.get(ctx.item_id)
            if item is not None:
                item.audio_complete = True

    def _on_speech_failed(self, event: SpeechFailed, out: list[CallAction]) -> None:
        """Fall back to the model's own voice for the rest of the call; say what was not heard."""
        if not self._tts_mode:
            return
        self._tts_mode = False
        out.append(self._session_config())
        for ctx in self._speech.values():
            if ctx.finished:
                continue
            ctx.finished = True
            unspoken = (ctx.text_sent + ctx.pending_text)[len(ctx.spoken):].strip()
            if ctx.context_id == self._active_response_id:
                # Still being written: collect the rest, and say it once the response is done.
                self._unspoken_responses[ctx.context_id] = unspoken + " "
            elif unspoken:
                self._queue_request(_say_exactly(unspoken), front=True)

    def _heard_text(self, item: _AssistantItem) -> str | None:
        ctx = self._speech.get(item.response_id)
        if ctx is None:
            return None
        return "".join(char for start_ms, char in ctx.spoken if start_ms < item.heard_ms).strip()

    def _on_response_started(self, event: ModelResponseStarted) -> None:
        self._active_response_id = event.response_id
        if self._inflight_request is not None and (
            event.request_id is None or event.request_id == self._inflight_request.request_id
        ):
            self._inflight_request = None

    def _on_model_audio(self, event: ModelAudio, out: list[CallAction]) -> None:
        duration_ms = mulaw_ms_of_base64(event.payload)
        if event.response_id in self._cancelled_responses:
            # Generated before the server saw our cancel: never played, but part of what the model produced.
            self._stats.model_audio_dropped_ms += duration_ms
            interrupted = self._interrupted_items.get(event.item_id) or self._playing_items.get(event.item_id)
            if interrupted is not None:
                interrupted.produced_ms += duration_ms
            elif event.item_id not in self._unheard_items:
                # An item the server started after the caller barged in: nobody heard any of it.
                self._unheard_items.add(event.item_id)
                if self._model_open:
                    out.append(DeleteModelItem(item_id=event.item_id))
            return
        self._stats.model_audio_ms += duration_ms
        self._responses_with_audio.add(event.response_id)
        item = self._playing_items.get(event.item_id)
        if item is None:
            for earlier in self._playing_items.values():
                if earlier.response_id == event.response_id:
                    earlier.audio_complete = True  # the response has moved on to its next item
            item = self._playing_items[event.item_id] = _AssistantItem(
                item_id=event.item_id, response_id=event.response_id, seq=self._next_seq(),
                generation=self._generation,
            )
        item.produced_ms += duration_ms
        self._queue.append(_QueuedAudio(event.response_id, event.item_id, event.payload, duration_ms))

    def _on_transcript_done(self, event: AssistantTranscriptDone, out: list[CallAction]) -> None:
        self._flush_speech(event.response_id, out)
        if event.item_id in self._unheard_items:
            return  # started after the barge-in: deleted, and not part of the record
        interrupted = self._interrupted_items.get(event.item_id)
        if interrupted is not None:
            if self._heard_text(interrupted) is not None:
                return  # spoken by the TTS: the heard text was recorded at the barge-in
            # The transcript of an interrupted item: record only what the caller heard.
            interrupted.transcript = event.transcript
            self._record_assistant(interrupted, out)
            return
        item = self._playing_items.get(event.item_id)
        if item is None:
            if event.response_id in self._cancelled_responses:
                return  # an item of an interrupted response that never reached the caller
            item = _AssistantItem(item_id=event.item_id, response_id=event.response_id, seq=self._next_seq(),
                                  generation=self._generation)
            self._playing_items[event.item_id] = item
        item.transcript = event.transcript
        if not self._tts_mode:
            item.audio_complete = True  # the transcript is done only after the item's audio is
        # Record now; if the caller interrupts later, the record is replaced by the heard part.
        self._record_assistant(item, out, final=False)

    def _on_response_done(self, event: ModelResponseDone, out: list[CallAction]) -> None:
        self._flush_speech(event.response_id, out)
        unspoken = self._unspoken_responses.pop(event.response_id, "").strip()
        if unspoken:
            self._queue_request(_say_exactly(unspoken), front=True)
        if event.usage:
            out.append(RecordUsage(event.usage))
            _add_usage(self._stats.usage, event.usage)
        if self._active_response_id == event.response_id or self._active_response_id is None:
            self._active_response_id = None
        for item in self._playing_items.values():
            if item.response_id == event.response_id and not self._tts_mode:
                item.audio_complete = True
        exit_ = self._exit
        if exit_ is not None and exit_.stage == "wait_response" and exit_.holding_response == event.response_id:
            if event.response_id in self._responses_with_audio or event.response_id in self._responses_with_speech:
                exit_.stage = "after_playback"  # the model already said its last line
            else:
                line = self.settings.end_call_goodbye if exit_.kind == "end_call" else self.settings.transfer_line
                self._queue_request(line, front=True)
                exit_.stage = "pending"

    def _on_model_error(self, event: ModelErrored, out: list[CallAction]) -> None:
        self._stats.model_errors += 1
        last = self._last_sent_request
        if event.code == "conversation_already_has_active_response" and last is not None:
            # Our response.create lost a race with one the server started itself: retry after it.
            if event.request_id == last.request_id or (event.request_id is None and self._inflight_request):
                self._pending_requests.appendleft(last)
                self._inflight_request = None
                self._last_sent_request = None
            return
        if event.code in BENIGN_MODEL_ERRORS:
            return
        if event.code in FATAL_MODEL_ERRORS or event.error_type in {"authentication_error", "permission_error"}:
            if event.code == "session_expired" and self.settings.reconnect_model:
                self._on_model_disconnected(self._last_now, out)
            else:
                self._on_model_lost(out)

    # ------------------------------------------------------------------ tools
    def _on_tool_requested(self, event: ToolCallRequested, now: float, out: list[CallAction]) -> None:
        if event.call_id in self._tools:
            return
        self._stats.tool_calls += 1
        seq = self._next_seq()
        if event.name == END_CALL_TOOL or (event.name == TRANSFER_TOOL and self.settings.transfer_number):
            # Handled here: a last line plays, then the call ends or is transferred.
            kind = "end_call" if event.name == END_CALL_TOOL else "transfer"
            result = json.dumps({"ok": True} if kind == "end_call" else {"ok": True, "status": "transferring"})
            self._exit = _PendingExit(kind=kind, stage="wait_response", holding_response=event.response_id)
            if kind == "transfer":
                self._transfer_note = (*_transfer_arguments(event.arguments), f"tool:{event.call_id}", seq)
            self._tool_results.append(SendToolResult(event.call_id, result))
            out.append(
                RecordMessage(
                    seq=seq, role="tool", text=event.name, message_id=f"tool:{event.call_id}", name=event.name,
                    arguments=event.arguments, result=result, duration_ms=0.0,
                )
            )
            return
        if event.name == TRANSFER_TOOL:
            result = json.dumps({"ok": False, "error": "no_transfer_number",
                                 "detail": "No human is available by phone; offer a callback ticket instead."})
            self._tool_results.append(SendToolResult(event.call_id, result))
            out.append(
                RecordMessage(
                    seq=seq, role="tool", text=event.name, message_id=f"tool:{event.call_id}", name=event.name,
                    arguments=event.arguments, result=result, duration_ms=0.0,
                )
            )
            return
        self._tools[event.call_id] = _ToolRun(
            call_id=event.call_id, name=event.name, arguments=event.arguments, response_id=event.response_id,
            started_at=now, seq=seq, next_thinking_at=now + self.settings.thinking_delay_s,
            generation=self._generation,
        )
        if self._next_thinking_at is None:
            self._next_thinking_at = now + self.settings.thinking_delay_s
        out.append(StartToolCall(call_id=event.call_id, name=event.name, arguments=event.arguments))

    def _on_tool_finished(self, event: ToolCallFinished, now: float, out: list[CallAction]) -> None:
        run = self._tools.pop(event.call_id, None)
        if run is None:
            return  # timed out already, or unknown
        self._finish_tool(run, event.output, now, out)

    def _finish_tool(self, run: _ToolRun, output: str, now: float, out: list[CallAction]) -> None:
        self._remember(run.seq, f"call:{run.call_id}", {
            "type": "function_call", "call_id": run.call_id, "name": run.name, "arguments": run.arguments})
        self._remember(run.seq, f"output:{run.call_id}", {
            "type": "function_call_output", "call_id": run.call_id, "output": output})
        if not self._tools and not self._reconnecting:
            self._next_thinking_at = None
            # Stop the thinking sound the moment the last result is in: drop what is queued and, when
            # only thinking sound is still unplayed at Twilio, clear it there too.
            self._queue = deque(q for q in self._queue if q.item_id is not None)
            if self._ledger.has_unplayed_audio and self._ledger.unplayed_item_ids() == set():
                out.append(ClearCallerPlayback())
                self._ledger.record_cleared(now)
                self._unmarked_ms = 0.0
                self._play_end_estimate = min(self._play_end_estimate, now)
        if run.generation != self._generation:
            # Asked for by a session that has since been replaced: the new one has never seen the call, so
            # it is created there first (an output for an unknown call_id is an error).
            self._tool_results.append(AddConversationItem({
                "type": "function_call", "call_id": run.call_id, "name": run.name, "arguments": run.arguments}))
        self._tool_results.append(SendToolResult(run.call_id, output))
        out.append(
            RecordMessage(
                seq=run.seq, role="tool", text=run.name, message_id=f"tool:{run.call_id}", name=run.name,
                arguments=run.arguments, result=output, duration_ms=round((now - run.started_at) * 1000.0, 1),
            )
        )

    def _flush_tool_results(self, out: list[CallAction]) -> None:
        # Tool outputs go back only after the response that held the call is done, then one response.create.
        if not self._tool_results or self._active_response_id is not None or self._inflight_request is not None:
            return
        if self._exit is not None and self._exit.stage == "wait_response":
            return
        out.extend(self._tool_results)
        self._tool_results = []
        if self._exit is not None:
            return  # the last line is queued or was spoken; nothing more to ask the model
        self._queue_request(None)

    # ------------------------------------------------------------------ deadlines
    def _on_deadline(self, now: float, out: list[CallAction]) -> None:
        s = self.settings
        if self._stream_started_at is not None:
            cap = self._stream_started_at + s.max_call_s
            if now >= cap:
                self._end("max_duration", out)
                return
            if not self._wrap_up_sent and s.wrap_up_s > 0 and now >= cap - s.wrap_up_s:
                self._wrap_up_sent = True
                self._queue_request(s.wrap_up_prompt)
        for run in list(self._tools.values()):
            if now >= run.started_at + s.tool_timeout_s:
                self._tools.pop(run.call_id)
                timeout_output = json.dumps(
                    {"ok": False, "error": "timeout", "detail": f"the tool did not answer within {s.tool_timeout_s:g} s"}
                )
                self._finish_tool(run, timeout_output, now, out)
        if (
            self._model_open and self._model_opened_at is not None
            and now >= self._model_opened_at + s.model_session_max_s
        ):
            self._recycle_model_session(now, out)
        if self._next_thinking_at is not None and now >= self._next_thinking_at:
            if self._tools or self._reconnecting:
                self._next_thinking_at = now + s.thinking_interval_s
                for chunk in s.thinking_sound:
                    self._queue.append(_QueuedAudio(None, None, chunk, mulaw_ms_of_base64(chunk)))
            else:
                self._next_thinking_at = None
        digits = self._keypad.expire(now)
        if digits is not None:
            self._on_keypad(digits, out)
        if self._silence_since is not None and self._exit is None:
            if self._inactivity_stage == 0 and now >= self._silence_since + s.inactivity_prompt_s:
                self._inactivity_stage = 1
                self._queue_request(s.still_there_prompt)
                self._silence_since = None
            elif self._inactivity_stage == 1 and now >= self._silence_since + s.inactivity_hangup_s:
                self._inactivity_stage = 2
                self._queue_request(s.inactivity_goodbye, front=True)
                self._exit = _PendingExit(kind="inactivity", stage="pending")
                self._silence_since = None

    # ------------------------------------------------------------------ helpers
    def _release_audio(self, now: float, out: list[CallAction]) -> None:
        if self.stream_sid is None:
            return
        lead_s = self.settings.playback_lead_ms / 1000.0
        # The same expression as next_deadline(), so a DeadlineReached at exactly that time releases audio.
        while self._queue and self._play_end_estimate - lead_s <= now:
            chunk = self._queue.popleft()
            self._play_end_estimate = max(self._play_end_estimate, now) + chunk.duration_ms / 1000.0
            if self._unmarked_ms > 0 and chunk.item_id != self._unmarked_item:
                self._send_mark(out)  # a mark closes one item's run before the next item's audio
            self._ledger.record_sent_unmarked(chunk.item_id, chunk.duration_ms, now)
            out.append(PlayToCaller(chunk.payload))
            self._unmarked_ms += chunk.duration_ms
            self._unmarked_item = chunk.item_id
            self._unmarked_response = chunk.response_id
            if self._unmarked_ms >= self.settings.mark_interval_ms:
                self._send_mark(out)
        # A mark always follows the last media of a response (and of a thinking sound).
        if self._unmarked_ms > 0 and self._is_audio_complete(self._unmarked_response):
            self._send_mark(out)

    def _send_mark(self, out: list[CallAction]) -> None:
        mark = self._ledger.mark(self._unmarked_item)
        out.append(SendPlaybackMark(name=mark.name, item_id=mark.item_id, audio_end_ms=mark.audio_end_ms))
        self._unmarked_ms = 0.0

    def _is_audio_complete(self, response_id: str | None) -> bool:
        """No more audio will be queued for this response (or thinking sound) right now."""
        if any(queued.response_id == response_id for queued in self._queue):
            return False
        if response_id is None:
            return True
        if response_id in self._cancelled_responses:
            return True
        ctx = self._speech.get(response_id)
        if ctx is not None:
            return ctx.finished
        return response_id not in (self._active_response_id,)

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

    def _check_exit(self, out: list[CallAction]) -> None:
        exit_ = self._exit
        if exit_ is None or exit_.stage in {"wait_response", "pending", "transferring"}:
            return
        if exit_.stage == "after_response":
            if self._inflight_request is not None or self._active_response_id is not None:
                return
            exit_.stage = "after_playback"
        if self._active_response_id is not None or self.has_unplayed_audio:
            return
        if exit_.kind == "transfer" and self.settings.transfer_number:
            exit_.stage = "transferring"
            reason, summary, message_id, seq = self._transfer_note
            out.append(TransferCall(number=self.settings.transfer_number, caller_id=self.settings.transfer_caller_id,
                                    reason=reason, summary=summary, message_id=message_id, seq=seq))
            return
        self._end(exit_.kind, out)

    def _on_goodbye_requested(self, reason: str) -> None:
        if self._exit is not None and self._exit.kind in {"transfer", reason}:
            return
        self._exit = _PendingExit(kind=reason, stage="pending")
        self._queue_request(self.settings.shutdown_goodbye, front=True)

    def _on_transfer_finished(self, event: TransferFinished, out: list[CallAction]) -> None:
        if self._exit is None or self._exit.kind not in {"transfer", "model_unavailable"}:
            return
        if self._exit.kind == "model_unavailable" or not self._model_open:
            self._end("model_unavailable" if self._exit.kind == "model_unavailable" else "transferred", out)
            return
        if event.ok:
            self._end("transferred", out)
            return
        self._exit = None
        self._queue_request(self.settings.transfer_failed_line, front=True)

    def _update_silence(self, now: float) -> None:
        idle = (
            self._phase is CallPhase.ACTIVE
            and not self._caller_speaking
            and self._active_response_id is None
            and self._inflight_request is None
            and not self._pending_requests
            and not self._tools
            and not self.has_unplayed_audio
            and not self._keypad.is_gathering
        )
        if not idle:
            self._silence_since = None
        elif self._silence_since is None:
            self._silence_since = now

    def _item_has_queued_audio(self, item_id: str) -> bool:
        return any(q.item_id == item_id for q in self._queue)

    def _record_assistant(self, item: _AssistantItem, out: list[CallAction], *, final: bool = True) -> None:
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

    def _record_heard(self, item: _AssistantItem, text: str, out: list[CallAction]) -> None:
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


def _transfer_arguments(arguments: str) -> tuple[str, str]:
    """`reason` and `summary` of a transfer_to_human call (empty when the model gave none or bad JSON)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return "", ""
    if not isinstance(parsed, dict):
        return "", ""
    return str(parsed.get("reason") or "").strip()[:500], str(parsed.get("summary") or "").strip()[:1000]


def _say_exactly(text: str) -> str:
    return f'Say exactly this to the caller, and nothing else: "{text}"'


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


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    for key, value in usage.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            _add_usage(total.setdefault(key, {}), value)

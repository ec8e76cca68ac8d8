"""CallStateMachine: one phone call's behaviour as a pure function of events and time.

`handle(event, now)` takes one event and the current monotonic time and returns the actions to
perform, in order; `next_deadline()` says when it next needs a `DeadlineReached`. It never awaits,
never touches a socket and never reads a clock, so two events can't interleave and tests pass
literal times. A misbehaving peer produces actions (or nothing), never an exception.

The parts live beside it, each a mixin over CallState (call_state.py): caller_side.py, model_session.py,
external_speech.py, model_responses.py and tool_calls.py. This class dispatches events to them, fires
deadlines and, after every event, paces audio out and checks whether the call is idle or may end.
"""

from __future__ import annotations

import json

from switchboard.bridge.call.actions import (
    AppendCallerAudio,
    CallAction,
    CancelModelResponse,
    DeleteModelItem,
    PlayToCaller,
    RecordMessage,
    RetrieveCallerAudio,
    SendPlaybackMark,
    TranscribeCallerAudio,
    TransferCall,
)
from switchboard.bridge.call.call_state import CallStats, PendingExit, QueuedAudio, cut_transcript
from switchboard.bridge.call.caller_side import CallerSide
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
from switchboard.bridge.call.model_responses import ModelResponses
from switchboard.bridge.call.model_session import ModelSession
from switchboard.bridge.call.phases import CallPhase
from switchboard.bridge.call.playback import mulaw_ms_of_base64
from switchboard.bridge.call.settings import CallSettings
from switchboard.bridge.call.tool_calls import ToolCalls

__all__ = ["CallSettings", "CallStateMachine", "CallStats", "cut_transcript"]


class CallStateMachine(CallerSide, ModelSession, ModelResponses, ToolCalls):
    """The sans-I/O core of one call. See the module docstring."""

    # ------------------------------------------------------------------ public surface
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
                    self._queue.append(QueuedAudio(None, None, chunk, mulaw_ms_of_base64(chunk)))
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
                self._exit = PendingExit(kind="inactivity", stage="pending")
                self._silence_since = None

    def _on_goodbye_requested(self, reason: str) -> None:
        if self._exit is not None and self._exit.kind in {"transfer", reason}:
            return
        self._exit = PendingExit(kind=reason, stage="pending")
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

    # ------------------------------------------------------------------ after every event
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

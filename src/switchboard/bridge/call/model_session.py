"""ModelSession: the model session's life: opened, dropped and replaced, recycled, or lost for good.

A new session after a drop (or before the provider's 60-minute limit) is told the conversation so far and
carries on; when none can be had the caller is handed to a human or promised a callback. A part of
CallStateMachine (a mixin over CallState). Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from switchboard.bridge.call.actions import (
    AddConversationItem,
    AppendCallerAudio,
    CallAction,
    ReconnectModel,
    TransferCall,
)
from switchboard.bridge.call.call_state import CallState, PendingExit
from switchboard.bridge.call.events import ModelErrored
from switchboard.bridge.call.phases import CallPhase

# Errors the model sends during ordinary races; they never end a call.
BENIGN_MODEL_ERRORS = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
# Errors after which the session is useless.
FATAL_MODEL_ERRORS = frozenset({"session_expired", "invalid_api_key", "insufficient_quota", "beta_api_shape_disabled"})


class ModelSession(CallState):
    """Model session lifecycle: open, reconnect and replay, recycle, give up; and the errors that end a session."""

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
            self._exit = PendingExit(kind="transfer", stage="transferring")
            out.append(TransferCall(number=s.transfer_number, caller_id=s.transfer_caller_id, apology=apology))
        else:
            apology = s.model_lost_apology + " We will call you back as soon as possible. Goodbye."
            self._exit = PendingExit(kind="model_unavailable", stage="transferring")
            out.append(TransferCall(number=None, caller_id=None, apology=apology))

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

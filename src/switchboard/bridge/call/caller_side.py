"""CallerSide: what the caller does: audio, the stream start, mark echoes, barge-in and keypad keys.

A part of CallStateMachine (a mixin over CallState). Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import json

from switchboard.bridge.call.actions import (
    AddConversationItem,
    AppendCallerAudio,
    CallAction,
    CancelModelResponse,
    ClearCallerPlayback,
    DeleteModelItem,
    DiscardCallerInput,
    RecordMessage,
    StopSpeech,
    TransferCall,
    TruncateModelAudio,
)
from switchboard.bridge.call.call_state import CallState, PendingExit, cut_transcript
from switchboard.bridge.call.events import StreamStarted
from switchboard.bridge.call.keypad import KEYS, DigitsEntered, KeypadOutcome, keypad_message
from switchboard.bridge.call.phases import CallPhase
from switchboard.bridge.call.playback import mulaw_ms_of_base64
from switchboard.bridge.call.tool_calls import TRANSFER_TOOL


class CallerSide(CallState):
    """Caller events. A barge-in clears Twilio, cancels the model and cuts the record, all in one tick."""

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
                self._exit = PendingExit(kind="transfer", stage="transferring")
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

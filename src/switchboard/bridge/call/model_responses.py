"""ModelResponses: each model response's audio queued for the caller, its transcript recorded, its usage.

A part of CallStateMachine (a mixin over CallState, through ExternalSpeech, which may be what speaks a
response). Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from typing import Any

from switchboard.bridge.call.actions import CallAction, DeleteModelItem, RecordUsage
from switchboard.bridge.call.call_state import AssistantItem, QueuedAudio
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    ModelAudio,
    ModelResponseDone,
    ModelResponseStarted,
)
from switchboard.bridge.call.external_speech import ExternalSpeech, say_exactly
from switchboard.bridge.call.playback import mulaw_ms_of_base64


class ModelResponses(ExternalSpeech):
    """Model responses: started, audio, transcript done, done."""

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
            item = self._playing_items[event.item_id] = AssistantItem(
                item_id=event.item_id, response_id=event.response_id, seq=self._next_seq(),
                generation=self._generation,
            )
        item.produced_ms += duration_ms
        self._queue.append(QueuedAudio(event.response_id, event.item_id, event.payload, duration_ms))

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
            item = AssistantItem(item_id=event.item_id, response_id=event.response_id, seq=self._next_seq(),
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
            self._queue_request(say_exactly(unspoken), front=True)
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


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> None:
    for key, value in usage.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            _add_usage(total.setdefault(key, {}), value)

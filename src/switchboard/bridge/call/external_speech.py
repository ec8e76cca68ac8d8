"""ExternalSpeech: the model writes text and an external TTS (ElevenLabs) speaks it.

Text goes to the TTS a word at a time, its audio is queued for the caller like the model's own, and its
alignment says which characters the caller heard. When the TTS fails the call falls back to the model's
voice. A part of CallStateMachine (a mixin over CallState). Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from switchboard.bridge.call.actions import CallAction, FlushSpeech, SpeakText
from switchboard.bridge.call.call_state import AssistantItem, CallState, QueuedAudio, SpeechContext
from switchboard.bridge.call.events import ModelTextDelta, SpeechAudio, SpeechFailed, SpeechFinished
from switchboard.bridge.call.playback import mulaw_ms_of_base64


class ExternalSpeech(CallState):
    """External TTS: one speech context per response, its audio and alignment, and the fallback."""

    def _on_text_delta(self, event: ModelTextDelta, out: list[CallAction]) -> None:
        if not self._tts_mode or event.response_id in self._cancelled_responses:
            if not self._tts_mode and event.response_id in self._unspoken_responses:
                self._unspoken_responses[event.response_id] += event.delta
            return
        ctx = self._speech.get(event.response_id)
        if ctx is None:
            ctx = SpeechContext(context_id=event.response_id, item_id=event.item_id)
            self._speech[event.response_id] = ctx
            # Open the TTS context at once (empty text): its set-up overlaps the first word being written.
            out.append(SpeakText(ctx.context_id, ""))
            if event.item_id not in self._playing_items:
                self._playing_items[event.item_id] = AssistantItem(
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
        self._queue.append(QueuedAudio(event.context_id, ctx.item_id, event.payload, duration_ms))

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
                self._queue_request(say_exactly(unspoken), front=True)


def say_exactly(text: str) -> str:
    return f'Say exactly this to the caller, and nothing else: "{text}"'

"""ElevenLabs mode in the core: the model writes, the TTS speaks; barge-in, heard text, fallback; and
transcription of caller turns for the record."""

from __future__ import annotations

from callkit import NO_PACING, answered_call, mulaw_b64, of_type
from callkit import settings as settings_for

from switchboard.bridge.call.actions import (
    AddConversationItem,
    CancelModelResponse,
    ClearCallerPlayback,
    ConfigureModelSession,
    DeleteModelItem,
    FlushSpeech,
    PlayToCaller,
    RecordMessage,
    RequestModelResponse,
    RetrieveCallerAudio,
    SendPlaybackMark,
    SpeakText,
    StopSpeech,
    TranscribeCallerAudio,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudioRetrieved,
    CallerStartedSpeaking,
    CallerTranscribed,
    CallerTurnCommitted,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    ModelTextDelta,
    PlaybackMarked,
    SpeechAudio,
    SpeechFailed,
    SpeechFinished,
    StreamStarted,
)
from switchboard.bridge.call.state_machine import CallStateMachine

TEXT = "Your order shipped yesterday. "


def tts_call(**overrides: object) -> CallStateMachine:
    return answered_call(external_tts=True, **{**NO_PACING, **overrides})


def test_the_session_asks_for_text_and_deltas_go_to_the_tts_on_word_boundaries() -> None:
    call = CallStateMachine(settings_for(external_tts=True))
    call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=0.0)
    [config] = of_type(call.handle(ModelSessionOpened(), now=0.0), ConfigureModelSession)
    assert config.output_modalities == ("text",)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    # The context opens with the first delta; text follows on word boundaries.
    assert of_type(call.handle(ModelTextDelta("resp_1", "item_1", "Your or"), now=1.01), SpeakText) == [
        SpeakText("resp_1", ""), SpeakText("resp_1", "Your ")]
    assert of_type(call.handle(ModelTextDelta("resp_1", "item_1", "der shipped"), now=1.02), SpeakText) == [
        SpeakText("resp_1", "order ")]
    done = call.handle(AssistantTranscriptDone("resp_1", "item_1", "Your order shipped"), now=1.03)
    assert of_type(done, SpeakText) == [SpeakText("resp_1", "shipped ")]
    assert of_type(done, FlushSpeech) == [FlushSpeech("resp_1")]


def test_tts_audio_is_played_and_marked_like_model_audio() -> None:
    call = tts_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(ModelTextDelta("resp_1", "item_1", TEXT), now=1.0)
    chunk = mulaw_b64(200, fill=0x21)
    actions = call.handle(SpeechAudio("resp_1", chunk, chars=tuple("Your"), char_start_ms=(0, 50, 100, 150)), now=1.2)
    assert of_type(actions, PlayToCaller) == [PlayToCaller(chunk)]
    [mark] = of_type(actions, SendPlaybackMark)
    assert mark.item_id == "item_1" and mark.audio_end_ms == 200


def test_barge_in_stops_the_tts_and_replaces_the_item_with_what_was_heard() -> None:
    call = tts_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(ModelTextDelta("resp_1", "item_1", "One two three four. "), now=1.0)
    chars = tuple("One two three four.")
    starts = tuple(i * 50 for i in range(len(chars)))  # 50 ms per character
    [m1] = of_type(call.handle(SpeechAudio("resp_1", mulaw_b64(400), chars[:8], starts[:8]), now=1.1),
                   SendPlaybackMark)
    call.handle(SpeechAudio("resp_1", mulaw_b64(550), chars[8:], tuple(s - 400 for s in starts[8:])), now=1.2)
    call.handle(PlaybackMarked(m1.name), now=1.5)  # 400 ms heard, and playback goes on from there

    # 425 ms heard: "One two t" (the characters that started before 425 ms).
    actions = call.handle(CallerStartedSpeaking(), now=1.525)

    assert actions[:3] == [ClearCallerPlayback(), CancelModelResponse("resp_1"), StopSpeech("resp_1")]
    assert of_type(actions, TruncateModelAudio) == []
    assert of_type(actions, DeleteModelItem) == [DeleteModelItem("item_1")]
    [replacement] = of_type(actions, AddConversationItem)
    assert replacement.item["content"][0]["text"] == "One two t"
    [record] = of_type(actions, RecordMessage)
    assert record.text == "One two t"
    # Nothing more of the interrupted answer reaches the caller.
    assert of_type(call.handle(SpeechAudio("resp_1", mulaw_b64(100)), now=1.7), PlayToCaller) == []
    late = call.handle(AssistantTranscriptDone("resp_1", "item_1", "One two three four."), now=1.8)
    assert of_type(late, RecordMessage) == []


def test_a_tts_failure_falls_back_to_the_model_voice_and_says_what_was_not_heard() -> None:
    call = tts_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(ModelTextDelta("resp_1", "item_1", "Hello there. "), now=1.0)
    call.handle(SpeechAudio("resp_1", mulaw_b64(300), tuple("Hello "), (0, 50, 100, 150, 200, 250)), now=1.1)
    actions = call.handle(SpeechFailed("socket_closed"), now=1.2)
    [config] = of_type(actions, ConfigureModelSession)
    assert config.output_modalities == ("audio",)
    call.handle(ModelTextDelta("resp_1", "item_1", "How can I help? "), now=1.3)
    done = call.handle(ModelResponseDone("resp_1", "completed"), now=1.4)
    [retry] = of_type(done, RequestModelResponse)
    assert "there. How can I help?" in (retry.instructions or "")


def test_caller_turns_are_transcribed_from_the_models_copy_in_conversation_order() -> None:
    call = answered_call(transcribe_caller_audio=True)
    assert call.handle(CallerTurnCommitted(item_id="user_1"), now=1.0) == [RetrieveCallerAudio("user_1")]
    call.handle(CallerTurnCommitted(item_id="user_2"), now=5.0)
    assert call.handle(CallerAudioRetrieved("user_1", "AAAA"), now=1.1) == [TranscribeCallerAudio("user_1", "AAAA")]
    # The second transcript finishes first; each keeps the position of its turn.
    [second] = of_type(call.handle(CallerTranscribed("user_2", "and my order"), now=6.0), RecordMessage)
    [first] = of_type(call.handle(CallerTranscribed("user_1", "[transcription failed]"), now=7.0), RecordMessage)
    assert first.seq < second.seq and first.text == "[transcription failed]"


def test_tts_speech_finished_lets_inactivity_count_start() -> None:
    call = tts_call(inactivity_prompt_s=5.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(ModelTextDelta("resp_1", "item_1", "Hi. "), now=1.0)
    call.handle(ModelResponseDone("resp_1", "completed"), now=1.1)
    assert call.has_unplayed_audio  # the TTS has not answered yet
    [mark] = of_type(call.handle(SpeechAudio("resp_1", mulaw_b64(100)), now=1.2), SendPlaybackMark)
    call.handle(SpeechFinished("resp_1"), now=1.3)
    call.handle(PlaybackMarked(mark.name), now=1.4)
    assert not call.has_unplayed_audio and call.next_deadline() == 6.4

"""The keypad in the call core: a key interrupts like speech, digits become one user message, shortcuts act
at once, and a key's tone in the audio causes no second barge-in. Events in, actions out, literal times."""

from __future__ import annotations

import json

from tests.bridge.call.callkit import FAR, NO_PACING, answered_call, echo, of_type, settings, speak

from switchboard.bridge.call.actions import (
    AddConversationItem,
    CancelModelResponse,
    ClearCallerPlayback,
    ConfigureModelSession,
    DeleteModelItem,
    DiscardCallerInput,
    RecordMessage,
    RequestModelResponse,
    TransferCall,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    CallerPressedKey,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CallerTurnCommitted,
    DeadlineReached,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    StreamStarted,
)
from switchboard.bridge.call.keypad import KeypadGatherer
from switchboard.bridge.call.state_machine import CallStateMachine

TYPED = "(typed on the phone keypad) "


def _press(call: CallStateMachine, keys: str, start: float, gap_s: float = 0.3) -> list:
    actions = []
    for index, key in enumerate(keys):
        actions += call.handle(CallerPressedKey(key), now=start + index * gap_s)
    return actions


def test_a_key_press_interrupts_exactly_as_speech_does_in_the_same_tick():
    keyed = answered_call(**NO_PACING)
    spoken = answered_call(**NO_PACING)
    for call in (keyed, spoken):
        _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 20, now=10.0)
        echo(call, marks[:6], now=10.6)

    by_key = keyed.handle(CallerPressedKey("4"), now=10.7)
    by_speech = spoken.handle(CallerStartedSpeaking(), now=10.7)

    # 600 ms echoed at 10.6, and Twilio played on for 100 ms since: 700 ms heard.
    expected = [ClearCallerPlayback(), CancelModelResponse(response_id="resp_1"),
                TruncateModelAudio(item_id="item_1", audio_end_ms=700)]
    assert by_speech == expected
    assert by_key[:3] == expected
    assert by_key[3:] == [DiscardCallerInput()]  # the key's tone, if Twilio put it in the audio, is no turn
    assert keyed.stats().barge_ins == 1


def test_digits_end_with_the_pause_as_one_user_message_then_one_response():
    call = answered_call(dtmf_pause_s=2.0)
    _press(call, "4512", start=10.0)  # last key at 10.9
    assert call.next_deadline() == 12.9

    assert call.handle(DeadlineReached(), now=12.8) == []
    actions = call.handle(DeadlineReached(), now=12.9)

    text = TYPED + "4512"
    [record] = of_type(actions, RecordMessage)
    assert (record.role, record.text) == ("user", text)
    [item] = of_type(actions, AddConversationItem)
    assert item.item == {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    [request] = of_type(actions, RequestModelResponse)
    assert request.instructions is None
    assert actions.index(item) < actions.index(request)
    assert call.next_deadline() == FAR


def test_hash_ends_the_digits_at_once_and_star_is_kept():
    call = answered_call()
    actions = _press(call, "12*4#", start=5.0)

    [record] = of_type(actions, RecordMessage)
    assert record.text == TYPED + "12*4"
    assert len(of_type(actions, RequestModelResponse)) == 1
    assert call.next_deadline() == FAR


def test_hash_alone_is_sent_as_a_hash():
    call = answered_call()
    [record] = of_type(call.handle(CallerPressedKey("#"), now=5.0), RecordMessage)
    assert record.text == TYPED + "#"


def test_digits_wait_for_the_active_response_to_finish_never_two_at_once():
    call = answered_call(**NO_PACING)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    actions = _press(call, "7#", start=2.0)
    # The key cancelled the response; the message is in, the response.create waits for its done.
    assert CancelModelResponse(response_id="resp_1") in actions
    assert of_type(actions, AddConversationItem)
    assert of_type(actions, RequestModelResponse) == []

    after = call.handle(ModelResponseDone(response_id="resp_1", status="cancelled"), now=2.5)
    assert len(of_type(after, RequestModelResponse)) == 1


def test_unknown_keys_are_ignored():
    call = answered_call()
    before = call.next_deadline()
    assert call.handle(CallerPressedKey("x"), now=1.0) == []
    assert call.next_deadline() == before


def test_a_mapped_key_on_its_own_transfers_at_once_without_the_model():
    call = answered_call(transfer_number="+15559990000", transfer_caller_id="+15557654321", keypad=(("0", "transfer"),))
    actions = call.handle(CallerPressedKey("0"), now=3.0)

    [transfer] = of_type(actions, TransferCall)
    assert (transfer.number, transfer.caller_id) == ("+15559990000", "+15557654321")
    assert transfer.apology  # Twilio says the line: no model turn
    assert of_type(actions, RequestModelResponse) == []
    [record] = of_type(actions, RecordMessage)
    assert record.name == "transfer_to_human" and record.message_id == transfer.message_id
    assert "pressed 0" in json.loads(record.arguments or "{}")["reason"]


def test_a_mapped_key_inside_a_run_of_digits_is_a_digit():
    call = answered_call(transfer_number="+15559990000", keypad=(("0", "transfer"),))
    actions = _press(call, "105#", start=3.0)
    assert of_type(actions, TransferCall) == []
    assert of_type(actions, RecordMessage)[0].text == TYPED + "105"


def test_the_keys_tone_in_the_audio_causes_no_second_barge_in():
    call = answered_call(**NO_PACING)
    _press(call, "4", start=10.0)
    # The VAD hears the tone shortly after the dtmf message: not speech, and its turn is dropped.
    assert call.handle(CallerStartedSpeaking(item_id="item_t"), now=10.05) == []
    call.handle(CallerStoppedSpeaking(item_id="item_t"), now=10.6)
    assert call.handle(CallerTurnCommitted(item_id="item_t"), now=10.6) == [DeleteModelItem(item_id="item_t")]
    # A response the server VAD started for the tone is cancelled; the keypad's own follows.
    assert call.handle(ModelResponseStarted(response_id="resp_tone"), now=10.7) == [
        CancelModelResponse(response_id="resp_tone")]
    call.handle(ModelResponseDone(response_id="resp_tone", status="cancelled"), now=10.8)
    actions = call.handle(DeadlineReached(), now=12.0)
    assert len(of_type(actions, RequestModelResponse)) == 1


def test_the_answer_to_the_digits_is_not_cut_by_the_hash_tone():
    call = answered_call(**NO_PACING)
    actions = _press(call, "9#", start=10.0)
    [request] = of_type(actions, RequestModelResponse)
    speak(call, response_id="resp_2", item_id="item_2", chunks_ms=[100] * 5, now=10.5, request_id=request.request_id)
    # The "#" tone's speech_started arrives late: the answer keeps playing.
    assert call.handle(CallerStartedSpeaking(), now=10.6) == []
    # Real speech well after the tone still barges in.
    call.handle(CallerStoppedSpeaking(), now=11.0)
    later = call.handle(CallerStartedSpeaking(), now=12.0)
    assert ClearCallerPlayback() in later


def test_gathering_digits_holds_off_the_inactivity_prompt():
    call = answered_call(inactivity_prompt_s=1.0, dtmf_pause_s=5.0)
    call.handle(DeadlineReached(), now=0.0)
    call.handle(CallerPressedKey("1"), now=0.5)
    assert call.next_deadline() == 5.5  # the pause, not the silence prompt


def test_turn_detection_goes_into_the_session_config_as_given():
    td = {"type": "semantic_vad", "eagerness": "low"}
    call = CallStateMachine(settings(turn_detection=td))
    [config] = of_type(call.handle(ModelSessionOpened(), now=0.0), ConfigureModelSession)
    assert config.turn_detection == td


def test_the_gatherer_on_its_own():
    pad = KeypadGatherer(pause_s=1.0, shortcuts={"0": "transfer"})
    assert pad.press("1", 0.0) is None
    assert pad.is_gathering and pad.is_tone_guarded(0.5)
    assert pad.expire(0.9) is None
    outcome = pad.expire(1.0)
    assert outcome is not None and outcome.digits == "1"
    assert not pad.is_gathering and pad.next_deadline() is None


def test_a_tone_taken_for_speech_does_not_stop_the_silence_clock():
    call = answered_call(inactivity_prompt_s=5.0)
    [request] = of_type(_press(call, "1#", start=1.0), RequestModelResponse)  # "#" at 1.3
    call.handle(ModelResponseStarted(response_id="resp_1", request_id=request.request_id), now=1.31)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.32)
    assert call.next_deadline() == 1.32 + 5.0
    # The "#" tone's speech_started; a VAD whose buffer was cleared may never send speech_stopped.
    assert call.handle(CallerStartedSpeaking(), now=1.4) == []
    assert call.next_deadline() == 1.32 + 5.0


def test_digits_typed_before_the_model_session_opened_reach_it_when_it_does():
    call = CallStateMachine(settings(dtmf_pause_s=1.0))
    call.handle(StreamStarted(stream_sid="MZ0001", call_sid="CA0001"), now=0.0)
    actions = _press(call, "42#", start=0.1)
    assert of_type(actions, AddConversationItem) == [] and of_type(actions, RequestModelResponse) == []
    opened = call.handle(ModelSessionOpened(), now=0.5)
    [item] = of_type(opened, AddConversationItem)
    assert item.item["content"][0]["text"] == TYPED + "42"
    assert len(of_type(opened, RequestModelResponse)) == 1
    assert opened.index(item) < opened.index(of_type(opened, RequestModelResponse)[0])


def test_digits_typed_before_the_session_opened_follow_the_greeting():
    call = CallStateMachine(settings(dtmf_pause_s=1.0, greeting="Hello, Acme here."))
    call.handle(StreamStarted(stream_sid="MZ0001", call_sid="CA0001"), now=0.0)
    _press(call, "42#", start=0.1)
    _press(call, "7#", start=0.3)

    # The greeting goes first, with nothing of the keypad in the conversation yet.
    opened = call.handle(ModelSessionOpened(), now=0.5)
    [greeting] = of_type(opened, RequestModelResponse)
    assert "Hello, Acme here." in (greeting.instructions or "")
    assert of_type(opened, AddConversationItem) == []
    # A key while the greeting plays: it interrupts (as speech does) and queues behind the earlier digits.
    call.handle(ModelResponseStarted(response_id="resp_g", request_id=greeting.request_id), now=0.6)
    during = call.handle(CallerPressedKey("9"), now=0.62) + call.handle(CallerPressedKey("#"), now=0.64)
    assert of_type(during, AddConversationItem) == [] and of_type(during, RequestModelResponse) == []
    # Once the greeting's response is done: the digits, in the order typed, then one response.create.
    after = call.handle(ModelResponseDone(response_id="resp_g", status="cancelled"), now=0.7)
    texts = [a.item["content"][0]["text"] for a in of_type(after, AddConversationItem)]
    assert texts == [TYPED + "42", TYPED + "7", TYPED + "9"]
    [request] = of_type(after, RequestModelResponse)
    assert request.instructions is None
    assert after.index(of_type(after, AddConversationItem)[-1]) < after.index(request)

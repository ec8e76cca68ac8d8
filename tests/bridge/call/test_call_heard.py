"""What the caller heard, against a Twilio that plays at real time and echoes marks exactly when due.

Barge-ins at odd offsets between marks, a long answer generated in a burst and cut at the heard fraction of
its whole audio, a response with a preamble and an answer, and barge-ins after the model session changed.
"""

from __future__ import annotations

import base64

import pytest
from callkit import NO_PACING, PlayingTwilio, answered_call, mulaw_b64, of_type

from switchboard.bridge.call.actions import (
    AddConversationItem,
    CancelModelResponse,
    ClearCallerPlayback,
    DeleteModelItem,
    RecordMessage,
    SendToolResult,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerStartedSpeaking,
    ModelAudio,
    ModelDisconnected,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    ToolCallFinished,
    ToolCallRequested,
)

PACED = {"playback_lead_ms": 300.0, "mark_interval_ms": 100.0}
UNPACED = {**NO_PACING, "mark_interval_ms": 100.0}
WORDS_48 = " ".join(f"word{i}" for i in range(48))


def burst(twilio: PlayingTwilio, *, response_id: str, item_id: str, ms: int, now: float, fill: int = 0,
          start: bool = True) -> list[str]:
    """The model produces `ms` of audio for `item_id` at once, in 20 ms deltas (as the live service does)."""
    call = twilio.call
    if start:
        twilio.perform(call.handle(ModelResponseStarted(response_id=response_id), now=now), now)
    # Every delta distinct (two bytes of counter), so what Twilio played can be told apart per item.
    payloads = [base64.b64encode((fill * 1000 + i).to_bytes(2, "big") * 80).decode() for i in range(ms // 20)]
    for payload in payloads:
        twilio.perform(call.handle(ModelAudio(response_id=response_id, item_id=item_id, payload=payload), now=now),
                       now)
    return payloads


@pytest.mark.parametrize("settings", [PACED, UNPACED], ids=["paced", "unpaced"])
@pytest.mark.parametrize("heard_ms", [730, 1170, 1450, 1890])
def test_truncation_is_what_was_heard_at_any_offset_between_marks(heard_ms: int, settings: dict) -> None:
    call = answered_call(**settings)
    twilio = PlayingTwilio(call)
    payloads = burst(twilio, response_id="resp_1", item_id="item_1", ms=3000, now=10.0)
    twilio.run_until(10.0 + heard_ms / 1000)
    assert twilio.heard_ms_of(payloads) == pytest.approx(heard_ms)

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=twilio.at), twilio.at)

    assert actions[:2] == [ClearCallerPlayback(), CancelModelResponse("resp_1")]
    [truncate] = of_type(actions, TruncateModelAudio)
    assert truncate.item_id == "item_1"
    assert heard_ms - 1 <= truncate.audio_end_ms <= heard_ms


@pytest.mark.parametrize("settings", [PACED, UNPACED], ids=["paced", "unpaced"])
def test_a_burst_answer_is_recorded_cut_at_the_heard_fraction_of_its_whole_audio(settings: dict) -> None:
    call = answered_call(**settings)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_1", ms=10_000, now=10.0)
    call.handle(AssistantTranscriptDone("resp_1", "item_1", WORDS_48), now=10.0)
    call.handle(ModelResponseDone("resp_1", "completed"), now=10.0)
    twilio.run_until(13.0)  # 30 % heard

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=13.0), 13.0)

    assert of_type(actions, TruncateModelAudio) == [TruncateModelAudio("item_1", 3000)]
    [record] = of_type(actions, RecordMessage)
    assert record.text == " ".join(WORDS_48.split()[:14]) + "…"  # 48 words x 0.3 = 14.4


def test_a_transcript_arriving_after_the_barge_in_is_cut_against_all_the_audio_produced() -> None:
    call = answered_call(**PACED)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_1", ms=6000, now=10.0)
    twilio.run_until(11.5)
    twilio.perform(call.handle(CallerStartedSpeaking(), now=11.5), 11.5)
    # Generated before the server saw the cancel: dropped, but part of the item the transcript covers.
    burst(twilio, response_id="resp_1", item_id="item_1", ms=2000, now=11.52, start=False)

    actions = call.handle(AssistantTranscriptDone("resp_1", "item_1", " ".join(f"w{i}" for i in range(40))),
                          now=11.53)

    [record] = of_type(actions, RecordMessage)
    assert record.text == " ".join(f"w{i}" for i in range(8)) + "…"  # 1500 of 8000 ms: 7.5 -> 8 words


def test_a_barge_in_during_the_answer_leaves_the_preamble_heard_whole_alone() -> None:
    call = answered_call(**PACED)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_pre", ms=1500, now=10.0)
    [preamble_record] = of_type(call.handle(AssistantTranscriptDone("resp_1", "item_pre", "Let me check that."),
                                            now=10.0), RecordMessage)
    answer = burst(twilio, response_id="resp_1", item_id="item_ans", ms=4000, now=10.0, fill=1, start=False)
    call.handle(AssistantTranscriptDone("resp_1", "item_ans", "one two three four five six seven eight"), now=10.0)
    twilio.run_until(12.5)  # all 1500 ms of the preamble, then 1000 ms of the answer
    assert twilio.heard_ms_of(answer) == pytest.approx(1000)

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=12.5), 12.5)

    assert actions[:2] == [ClearCallerPlayback(), CancelModelResponse("resp_1")]
    assert of_type(actions, TruncateModelAudio) == [TruncateModelAudio("item_ans", 1000)]
    assert of_type(actions, DeleteModelItem) == []
    [record] = of_type(actions, RecordMessage)
    assert (record.message_id, record.text) == ("assistant:item_ans", "one two…")
    assert preamble_record.text == "Let me check that."  # recorded whole, and never replaced


def test_a_barge_in_during_the_preamble_deletes_the_answer_nobody_heard() -> None:
    call = answered_call(**PACED)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_pre", ms=1500, now=10.0)
    burst(twilio, response_id="resp_1", item_id="item_ans", ms=4000, now=10.0, fill=1, start=False)
    twilio.run_until(10.9)

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=10.9), 10.9)

    assert of_type(actions, TruncateModelAudio) == [TruncateModelAudio("item_pre", 900)]
    assert of_type(actions, DeleteModelItem) == [DeleteModelItem("item_ans")]


def test_an_item_the_server_starts_after_the_cancel_is_deleted_and_never_recorded() -> None:
    call = answered_call(**PACED)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_pre", ms=1500, now=10.0)
    twilio.run_until(10.5)
    twilio.perform(call.handle(CallerStartedSpeaking(), now=10.5), 10.5)

    late = call.handle(ModelAudio(response_id="resp_1", item_id="item_late", payload=mulaw_b64(20)), now=10.51)
    again = call.handle(ModelAudio(response_id="resp_1", item_id="item_late", payload=mulaw_b64(20)), now=10.52)
    transcript = call.handle(AssistantTranscriptDone("resp_1", "item_late", "Never heard."), now=10.53)

    assert late == [DeleteModelItem("item_late")]
    assert again == []
    assert of_type(transcript, RecordMessage) == []


def test_after_a_reconnect_the_new_session_hears_only_about_what_it_was_given() -> None:
    call = answered_call(**PACED)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_1", ms=4000, now=10.0)
    call.handle(AssistantTranscriptDone("resp_1", "item_1", "one two three four five six seven eight"), now=10.0)
    twilio.run_until(10.5)
    twilio.perform(call.handle(ModelDisconnected("1006"), now=10.5), 10.5)
    twilio.run_until(10.8)
    opened = twilio.perform(call.handle(ModelSessionOpened(), now=10.8), 10.8)
    twilio.run_until(11.0)  # the old answer's audio still plays meanwhile
    [replayed] = [a.item for a in of_type(opened, AddConversationItem) if a.item.get("role") == "assistant"]
    assert replayed["content"][0]["text"] == "one two three four five six seven eight"

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=11.0), 11.0)

    assert actions[0] == ClearCallerPlayback()
    assert of_type(actions, TruncateModelAudio) == []
    assert of_type(actions, CancelModelResponse) == []
    # Only what the new session was given (our replay, under our own id) is touched: replaced by the heard part.
    assert of_type(actions, DeleteModelItem) == [DeleteModelItem(replayed["id"])]
    [heard] = of_type(actions, AddConversationItem)
    assert heard.item["content"][0]["text"] == "one two…"
    [record] = of_type(actions, RecordMessage)  # the record is cut to what was heard
    assert record.text == "one two…"


def test_after_a_session_recycle_the_new_session_hears_only_about_what_it_was_given() -> None:
    call = answered_call(**PACED, model_session_max_s=60.0)
    twilio = PlayingTwilio(call)
    burst(twilio, response_id="resp_1", item_id="item_1", ms=4000, now=58.0)
    call.handle(AssistantTranscriptDone("resp_1", "item_1", "one two three four"), now=58.0)
    call.handle(ModelResponseDone("resp_1", "completed"), now=58.0)
    twilio.run_until(60.5)
    assert any(type(a).__name__ == "ReconnectModel" for a in twilio.actions)
    opened = twilio.perform(call.handle(ModelSessionOpened(), now=60.6), 60.6)
    twilio.run_until(61.0)
    [replayed] = [a.item for a in of_type(opened, AddConversationItem) if a.item.get("role") == "assistant"]

    actions = twilio.perform(call.handle(CallerStartedSpeaking(), now=61.0), 61.0)

    assert actions[0] == ClearCallerPlayback()
    assert of_type(actions, TruncateModelAudio) == []
    assert of_type(actions, DeleteModelItem) == [DeleteModelItem(replayed["id"])]
    [record] = of_type(actions, RecordMessage)
    assert record.text == "one two three…"  # 3000 of 4000 ms


def test_a_tool_that_finishes_after_a_reconnect_is_answered_with_its_call_recreated_first() -> None:
    call = answered_call(**PACED)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order",
                                  arguments='{"order_number": "7"}'), now=1.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.1)
    call.handle(ModelDisconnected("1006"), now=1.2)
    call.handle(ModelSessionOpened(), now=1.4)

    actions = call.handle(ToolCallFinished(call_id="call_1", output='{"status": "shipped"}'), now=1.6)

    recreated = of_type(actions, AddConversationItem)
    assert recreated == [AddConversationItem({"type": "function_call", "call_id": "call_1", "name": "lookup_order",
                                              "arguments": '{"order_number": "7"}'})]
    assert actions.index(recreated[0]) < actions.index(of_type(actions, SendToolResult)[0])

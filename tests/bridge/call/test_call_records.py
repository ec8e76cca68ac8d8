"""RecordMessage: the conversation as the App server stores it, in order, cut to what the caller heard."""

from __future__ import annotations

import pytest
from callkit import NO_PACING, answered_call, echo, of_type, speak

from switchboard.bridge.call.actions import RecordMessage
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerStartedSpeaking,
    CallerTranscribed,
    CallerTurnCommitted,
    ModelResponseDone,
    ModelResponseStarted,
    ToolCallFinished,
    ToolCallRequested,
)
from switchboard.bridge.call.state_machine import cut_transcript

TEN_WORDS = "one two three four five six seven eight nine ten"


def test_assistant_transcript_is_recorded():
    call = answered_call(**NO_PACING)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[500], now=1.0)

    actions = call.handle(
        AssistantTranscriptDone(response_id="resp_1", item_id="item_1", transcript="Hello, Acme here."), now=1.1
    )

    [record] = of_type(actions, RecordMessage)
    assert (record.role, record.text, record.message_id) == ("assistant", "Hello, Acme here.", "assistant:item_1")
    assert not record.interrupted


def test_barge_in_replaces_the_assistant_record_with_the_part_that_was_heard():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=1.0)
    [full] = of_type(
        call.handle(AssistantTranscriptDone(response_id="resp_1", item_id="item_1", transcript=TEN_WORDS), now=1.1),
        RecordMessage,
    )
    echo(call, marks[:5], now=1.5)  # 500 of 1000 ms heard

    [cut] = of_type(call.handle(CallerStartedSpeaking(), now=1.5), RecordMessage)

    assert cut.message_id == full.message_id
    assert cut.seq == full.seq
    assert cut.text == "one two three four five…"
    assert cut.interrupted and not full.interrupted


def test_user_transcript_is_recorded_in_turn_order_even_when_it_arrives_late():
    call = answered_call(**NO_PACING)
    call.handle(CallerTurnCommitted(item_id="item_u1"), now=3.0)
    speak(call, response_id="resp_1", item_id="item_a1", chunks_ms=[500], now=3.5)
    [assistant] = of_type(
        call.handle(AssistantTranscriptDone(response_id="resp_1", item_id="item_a1", transcript="Sure."), now=3.6),
        RecordMessage,
    )

    actions = call.handle(CallerTranscribed(item_id="item_u1", transcript="  Where is my order?  "), now=4.0)

    [user] = of_type(actions, RecordMessage)
    assert (user.role, user.text, user.message_id) == ("user", "Where is my order?", "user:item_u1")
    assert user.seq < assistant.seq


def test_blank_user_transcript_is_not_recorded():
    call = answered_call()
    call.handle(CallerTurnCommitted(item_id="item_u1"), now=3.0)
    assert call.handle(CallerTranscribed(item_id="item_u1", transcript="   "), now=4.0) == []


def test_tool_call_is_recorded_with_arguments_result_and_duration():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    call.handle(
        ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order", arguments='{"id": "A7"}'),
        now=20.0,
    )
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=20.1)

    actions = call.handle(ToolCallFinished(call_id="call_1", output='{"status": "shipped"}'), now=20.5)

    [record] = of_type(actions, RecordMessage)
    assert record == RecordMessage(
        seq=record.seq, role="tool", text="lookup_order", message_id="tool:call_1", name="lookup_order",
        arguments='{"id": "A7"}', result='{"status": "shipped"}', duration_ms=500.0,
    )


def test_end_call_tool_is_recorded():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    actions = call.handle(
        ToolCallRequested(response_id="resp_1", call_id="call_end", name="end_call", arguments="{}"), now=20.0
    )
    [record] = of_type(actions, RecordMessage)
    assert (record.role, record.name, record.message_id) == ("tool", "end_call", "tool:call_end")


@pytest.mark.parametrize(
    ("heard_ms", "sent_ms", "expected"),
    [
        (0.0, 1000.0, ""),
        (1000.0, 1000.0, TEN_WORDS),
        (1500.0, 1000.0, TEN_WORDS),
        (500.0, 1000.0, "one two three four five…"),
        (100.0, 0.0, ""),
    ],
)
def test_cut_transcript(heard_ms, sent_ms, expected):
    assert cut_transcript(TEN_WORDS, heard_ms, sent_ms) == expected

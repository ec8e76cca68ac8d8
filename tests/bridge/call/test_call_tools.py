"""Tool calls: background run, result after the holding response, thinking sound, timeout, end_call."""

from __future__ import annotations

import json

from callkit import FAR, NO_PACING, answered_call, echo, mulaw_b64, of_type, payloads, speak

from switchboard.bridge.call.actions import (
    ClearCallerPlayback,
    EndCall,
    RecordMessage,
    RequestModelResponse,
    SendPlaybackMark,
    SendToolResult,
    StartToolCall,
)
from switchboard.bridge.call.events import (
    DeadlineReached,
    ModelResponseDone,
    ModelResponseStarted,
    PlaybackMarked,
    ToolCallFinished,
    ToolCallRequested,
)
from switchboard.bridge.call.phases import CallPhase

THINKING = mulaw_b64(400, fill=0x7F)
ORDER_FOUND = '{"ok": true, "status": "shipped"}'


def request_lookup(call, *, now, response_id="resp_1", call_id="call_1"):
    return call.handle(
        ToolCallRequested(response_id=response_id, call_id=call_id, name="lookup_order", arguments='{"id": "A7"}'),
        now=now,
    )


def test_tool_call_requested_starts_the_tool():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)

    actions = request_lookup(call, now=20.0)

    assert actions == [StartToolCall(call_id="call_1", name="lookup_order", arguments='{"id": "A7"}')]
    assert call.stats().tool_calls == 1


def test_the_same_call_id_twice_starts_the_tool_once():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    request_lookup(call, now=20.0)
    assert of_type(request_lookup(call, now=20.01), StartToolCall) == []


def test_result_waits_for_the_response_that_held_the_call():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    request_lookup(call, now=20.0)

    finished = call.handle(ToolCallFinished(call_id="call_1", output=ORDER_FOUND), now=20.2)
    assert of_type(finished, SendToolResult) == []
    assert of_type(finished, RequestModelResponse) == []

    actions = call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=20.3)

    assert [type(a) for a in actions] == [SendToolResult, RequestModelResponse]
    assert actions[0] == SendToolResult(call_id="call_1", output=ORDER_FOUND)
    assert actions[1].instructions is None


def test_result_after_the_holding_response_is_done_goes_out_at_once():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    request_lookup(call, now=20.0)
    assert call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=20.05) == []

    actions = call.handle(ToolCallFinished(call_id="call_1", output=ORDER_FOUND), now=21.0)

    assert [type(a) for a in actions if not isinstance(a, RecordMessage)] == [SendToolResult, RequestModelResponse]


def thinking_call():
    call = answered_call(thinking_sound=(THINKING,), thinking_delay_s=0.5, thinking_interval_s=3.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    request_lookup(call, now=20.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=20.05)
    return call


def test_thinking_sound_starts_after_the_delay_and_repeats_every_interval():
    call = thinking_call()
    assert call.next_deadline() == 20.5

    first = call.handle(DeadlineReached(), now=20.5)
    assert payloads(first) == [THINKING]
    assert [(m.item_id, m.audio_end_ms) for m in of_type(first, SendPlaybackMark)] == [(None, 0)]
    assert call.next_deadline() == 23.5

    assert payloads(call.handle(DeadlineReached(), now=23.5)) == [THINKING]
    assert call.next_deadline() == 26.5


def test_thinking_sound_does_not_start_before_the_delay():
    call = thinking_call()
    assert payloads(call.handle(DeadlineReached(), now=20.4)) == []


def test_thinking_sound_stops_when_the_result_is_in():
    call = thinking_call()
    call.handle(DeadlineReached(), now=20.5)
    call.handle(DeadlineReached(), now=23.5)  # its mark is still pending at Twilio

    actions = call.handle(ToolCallFinished(call_id="call_1", output=ORDER_FOUND), now=23.7)

    # The unplayed thinking sound is cleared at Twilio; the result goes to the model.
    assert ClearCallerPlayback() in actions
    assert SendToolResult(call_id="call_1", output=ORDER_FOUND) in actions
    assert len(of_type(actions, RequestModelResponse)) == 1
    assert call.next_deadline() == FAR
    assert payloads(call.handle(DeadlineReached(), now=26.5)) == []


def test_thinking_sound_that_already_played_is_not_cleared():
    call = thinking_call()
    marks = of_type(call.handle(DeadlineReached(), now=20.5), SendPlaybackMark)
    echo(call, marks, now=20.9)

    actions = call.handle(ToolCallFinished(call_id="call_1", output=ORDER_FOUND), now=21.0)

    assert ClearCallerPlayback() not in actions
    assert of_type(actions, SendToolResult) == [SendToolResult(call_id="call_1", output=ORDER_FOUND)]


def test_a_tool_that_does_not_answer_in_time_gets_a_timeout_result():
    call = answered_call(tool_timeout_s=5.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=20.0)
    request_lookup(call, now=20.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=20.05)
    assert call.next_deadline() == 25.0

    actions = call.handle(DeadlineReached(), now=25.0)

    [result] = of_type(actions, SendToolResult)
    assert result.call_id == "call_1"
    assert json.loads(result.output)["error"] == "timeout"
    assert len(of_type(actions, RequestModelResponse)) == 1
    # A result arriving after the timeout is not sent a second time.
    assert of_type(call.handle(ToolCallFinished(call_id="call_1", output=ORDER_FOUND), now=26.0), SendToolResult) == []


def test_end_call_ends_the_call_after_the_goodbye_has_played():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_bye", chunks_ms=[200] * 3, now=30.0)
    tool_actions = call.handle(
        ToolCallRequested(response_id="resp_1", call_id="call_end", name="end_call", arguments="{}"), now=30.05
    )
    assert of_type(tool_actions, StartToolCall) == []

    done = call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=30.1)
    assert of_type(done, SendToolResult) == [SendToolResult(call_id="call_end", output='{"ok": true}')]
    assert of_type(done, RequestModelResponse) == []  # the goodbye was already spoken
    assert of_type(done, EndCall) == []

    assert echo(call, marks[:2], now=30.5) == []
    assert call.phase is CallPhase.ACTIVE

    assert call.handle(PlaybackMarked(name=marks[2].name), now=30.7) == [EndCall("end_call")]
    assert call.end_reason == "end_call"
    assert call.phase is CallPhase.ENDED


def test_end_call_without_a_spoken_goodbye_asks_for_one_then_ends_after_it_played():
    call = answered_call(**NO_PACING)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=30.0)
    call.handle(ToolCallRequested(response_id="resp_1", call_id="call_end", name="end_call", arguments="{}"), now=30.0)

    done = call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=30.1)

    assert [type(a) for a in done] == [SendToolResult, RequestModelResponse]
    assert done[1].instructions == call.settings.end_call_goodbye
    _, marks = speak(call, response_id="resp_2", item_id="item_bye", chunks_ms=[300, 300], now=30.5,
                     request_id=done[1].request_id)
    assert of_type(call.handle(ModelResponseDone(response_id="resp_2", status="completed"), now=30.6), EndCall) == []
    assert echo(call, marks[:1], now=30.8) == []

    assert call.handle(PlaybackMarked(name=marks[1].name), now=31.1) == [EndCall("end_call")]

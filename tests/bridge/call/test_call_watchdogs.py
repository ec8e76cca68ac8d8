"""Inactivity (silence counted from the last echoed mark) and maximum call duration."""

from __future__ import annotations

from callkit import FAR, NO_PACING, answered_call, echo, of_type, settings, speak

from switchboard.bridge.call.actions import ClearCallerPlayback, EndCall, RequestModelResponse
from switchboard.bridge.call.events import (
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    DeadlineReached,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    StreamStarted,
    ToolCallFinished,
    ToolCallRequested,
)
from switchboard.bridge.call.phases import CallPhase
from switchboard.bridge.call.state_machine import CallStateMachine

INACTIVE = {"inactivity_prompt_s": 10.0, "inactivity_hangup_s": 8.0, **NO_PACING}


def say(call, response_id, item_id, chunks_ms, *, start_at, done_at, request_id=None):
    """One complete spoken response; returns its marks (not yet echoed)."""
    _, marks = speak(call, response_id=response_id, item_id=item_id, chunks_ms=chunks_ms, now=start_at,
                     request_id=request_id)
    call.handle(ModelResponseDone(response_id=response_id, status="completed"), now=done_at)
    return marks


def greeted_and_heard(**overrides):
    """Greeting requested at 0, spoken 0.5-0.6, its last mark echoed at 1.5."""
    call = answered_call(greeting="Hello, Acme here.", **{**INACTIVE, **overrides})
    marks = say(call, "resp_greet", "item_greet", [500, 500], start_at=0.5, done_at=0.6, request_id="sb_req_1")
    echo(call, marks[:1], now=1.0)
    assert call.next_deadline() == FAR  # still playing: silence has not started
    echo(call, marks[1:], now=1.5)
    return call


def test_silence_is_counted_from_the_last_echoed_mark():
    call = greeted_and_heard()
    assert call.next_deadline() == 11.5
    assert call.handle(DeadlineReached(), now=11.0) == []


def test_inactivity_prompts_then_says_goodbye_then_ends_after_the_goodbye_played():
    call = greeted_and_heard()

    prompt = call.handle(DeadlineReached(), now=11.5)
    assert [r.instructions for r in of_type(prompt, RequestModelResponse)] == [call.settings.still_there_prompt]
    assert of_type(prompt, EndCall) == []

    marks = say(call, "resp_prompt", "item_prompt", [1000], start_at=11.6, done_at=11.7,
                request_id=prompt[0].request_id)
    assert call.next_deadline() == FAR  # the prompt is still playing
    echo(call, marks, now=12.7)
    assert call.next_deadline() == 20.7  # inactivity_hangup_s after the prompt finished playing

    goodbye = call.handle(DeadlineReached(), now=20.7)
    assert [r.instructions for r in of_type(goodbye, RequestModelResponse)] == [call.settings.inactivity_goodbye]
    assert of_type(goodbye, EndCall) == []

    marks = say(call, "resp_bye", "item_bye", [500, 500], start_at=20.8, done_at=20.9,
                request_id=goodbye[0].request_id)
    assert echo(call, marks[:1], now=21.3) == []
    assert call.phase is CallPhase.ACTIVE

    assert echo(call, marks[1:], now=21.8) == [EndCall("inactivity")]
    assert call.end_reason == "inactivity"


def test_caller_speech_resets_the_inactivity_count():
    call = greeted_and_heard()
    call.handle(DeadlineReached(), now=11.5)  # still-there prompt requested
    marks = say(call, "resp_prompt", "item_prompt", [1000], start_at=11.6, done_at=11.7, request_id="sb_req_2")
    echo(call, marks, now=12.7)
    assert call.next_deadline() == 20.7

    assert call.handle(CallerStartedSpeaking(), now=15.0) == [ClearCallerPlayback()]
    assert call.next_deadline() == FAR
    call.handle(CallerStoppedSpeaking(), now=16.0)

    # Back to the first stage: a prompt (not a goodbye) after inactivity_prompt_s.
    assert call.next_deadline() == 26.0
    actions = call.handle(DeadlineReached(), now=26.0)
    assert [r.instructions for r in of_type(actions, RequestModelResponse)] == [call.settings.still_there_prompt]


def test_caller_speech_during_the_inactivity_goodbye_keeps_the_call_going():
    call = greeted_and_heard()
    call.handle(DeadlineReached(), now=11.5)
    echo(call, say(call, "resp_prompt", "item_prompt", [1000], start_at=11.6, done_at=11.7), now=12.7)
    call.handle(DeadlineReached(), now=20.7)  # goodbye requested
    marks = say(call, "resp_bye", "item_bye", [1000], start_at=20.8, done_at=20.9)

    call.handle(CallerStartedSpeaking(), now=21.0)
    call.handle(CallerStoppedSpeaking(), now=21.5)
    assert echo(call, marks, now=22.0) == []
    assert call.phase is CallPhase.ACTIVE


def test_a_running_tool_pauses_the_inactivity_count():
    call = greeted_and_heard(tool_timeout_s=100.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=5.0)
    call.handle(ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order", arguments="{}"),
                now=5.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=5.2)

    assert call.next_deadline() == 105.0  # the tool timeout; no inactivity deadline while it runs
    assert of_type(call.handle(DeadlineReached(), now=40.0), RequestModelResponse) == []

    call.handle(ToolCallFinished(call_id="call_1", output='{"ok": true}'), now=60.0)
    marks = say(call, "resp_2", "item_2", [1000], start_at=60.1, done_at=60.2)
    echo(call, marks, now=61.1)
    assert call.next_deadline() == 71.1


def test_wrap_up_at_max_call_minus_wrap_up_then_end_at_max_call_from_stream_start():
    call = CallStateMachine(settings(max_call_s=120.0, wrap_up_s=20.0, inactivity_prompt_s=600.0))
    call.handle(ModelSessionOpened(), now=0.0)  # pre-opened before the stream arrived
    call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=5.0)
    assert call.next_deadline() == 105.0

    wrap_up = call.handle(DeadlineReached(), now=105.0)
    assert [r.instructions for r in of_type(wrap_up, RequestModelResponse)] == [call.settings.wrap_up_prompt]
    assert of_type(wrap_up, EndCall) == []
    assert call.next_deadline() == 125.0

    # The cap holds whatever happens: here the model is mid-sentence.
    speak(call, response_id="resp_9", item_id="item_9", chunks_ms=[500] * 4, now=124.0)
    assert call.handle(DeadlineReached(), now=125.0) == [EndCall("max_duration")]
    assert call.end_reason == "max_duration"


def test_wrap_up_is_requested_once():
    call = answered_call(max_call_s=120.0, wrap_up_s=20.0)
    call.handle(DeadlineReached(), now=100.0)
    call.handle(ModelResponseStarted(response_id="resp_w", request_id="sb_req_1"), now=100.1)
    call.handle(ModelResponseDone(response_id="resp_w", status="completed"), now=101.0)

    assert of_type(call.handle(DeadlineReached(), now=110.0), RequestModelResponse) == []

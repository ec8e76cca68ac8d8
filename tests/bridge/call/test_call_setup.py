"""Call start-up: session.update, greeting, caller audio held until the model is open, stream start, ending."""

from __future__ import annotations

import pytest
from callkit import answered_call, mulaw_b64, of_type, payloads, settings

from switchboard.bridge.call.actions import (
    AppendCallerAudio,
    ConfigureModelSession,
    EndCall,
    PlayToCaller,
    RequestModelResponse,
    SendPlaybackMark,
)
from switchboard.bridge.call.events import (
    CallerAudio,
    CallerHungUp,
    CallerStartedSpeaking,
    DeadlineReached,
    ModelAudio,
    ModelDisconnected,
    ModelResponseStarted,
    ModelSessionOpened,
    StreamStarted,
    ToolCallRequested,
)
from switchboard.bridge.call.phases import CallPhase
from switchboard.bridge.call.state_machine import CallStateMachine

LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order by its number.",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}


def test_model_session_opened_configures_the_session_then_requests_the_greeting():
    call = CallStateMachine(
        settings(
            instructions="You answer the phone for Acme.", greeting="Thanks for calling Acme!", voice="cedar",
            speed=1.1, tools=(LOOKUP_ORDER,), transcription_model="gpt-transcribe",
        )
    )
    assert call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=0.0) == []

    actions = call.handle(ModelSessionOpened(), now=0.2)

    assert len(actions) == 2
    assert actions[0] == ConfigureModelSession(
        instructions="You answer the phone for Acme.", voice="cedar", speed=1.1, tools=(LOOKUP_ORDER,),
        output_modalities=("audio",), transcription_model="gpt-transcribe",
    )
    greeting = actions[1]
    assert isinstance(greeting, RequestModelResponse)
    assert greeting.instructions is not None and "Thanks for calling Acme!" in greeting.instructions
    assert call.phase is CallPhase.ACTIVE


def test_greeting_is_requested_without_waiting_for_the_stream():
    call = CallStateMachine(settings(greeting="Hello, Acme here."))

    actions = call.handle(ModelSessionOpened(), now=0.0)

    assert [type(a) for a in actions] == [ConfigureModelSession, RequestModelResponse]
    assert call.phase is CallPhase.CONNECTING
    assert call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=1.0) == []
    assert call.phase is CallPhase.ACTIVE


def test_without_a_greeting_only_the_session_is_configured():
    call = CallStateMachine(settings())
    assert [type(a) for a in call.handle(ModelSessionOpened(), now=0.0)] == [ConfigureModelSession]


def test_a_second_model_session_opened_changes_nothing():
    call = answered_call(greeting="Hi!")
    assert call.handle(ModelSessionOpened(), now=1.0) == []


def test_caller_audio_is_held_until_the_model_is_open_then_appended_unchanged_in_order():
    call = CallStateMachine(settings(greeting="Hi!"))
    call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=0.0)
    frames = [mulaw_b64(20, fill=i) for i in range(250)]  # 5 s of 20 ms frames, under the 10 s bound
    for i, frame in enumerate(frames):
        assert call.handle(CallerAudio(frame), now=0.02 * i) == []

    actions = call.handle(ModelSessionOpened(), now=5.0)

    assert isinstance(actions[0], ConfigureModelSession)
    assert isinstance(actions[1], RequestModelResponse)
    assert actions[2:] == [AppendCallerAudio(frame) for frame in frames]
    assert call.stats().caller_frames == 250
    assert call.stats().caller_frames_dropped == 0

    later = mulaw_b64(20, fill=7)
    assert call.handle(CallerAudio(later), now=5.02) == [AppendCallerAudio(later)]


def test_held_caller_audio_past_the_bound_drops_only_the_oldest_frames():
    call = CallStateMachine(settings(max_buffered_caller_ms=100.0))
    call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=0.0)
    frames = [mulaw_b64(20, fill=i) for i in range(10)]
    for i, frame in enumerate(frames):
        call.handle(CallerAudio(frame), now=0.02 * i)

    actions = call.handle(ModelSessionOpened(), now=0.3)

    # Exactly the bound (100 ms = the 5 newest frames) survives, in order.
    assert of_type(actions, AppendCallerAudio) == [AppendCallerAudio(frame) for frame in frames[5:]]
    assert call.stats().caller_frames_dropped == 5


def test_model_audio_before_the_stream_starts_is_released_when_it_starts():
    call = CallStateMachine(settings(greeting="Hi!"))
    call.handle(ModelSessionOpened(), now=0.0)
    call.handle(ModelResponseStarted(response_id="resp_1", request_id="sb_req_1"), now=0.3)
    deltas = [mulaw_b64(100, fill=i) for i in range(3)]
    for delta in deltas:
        actions = call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=delta), now=0.4)
        assert of_type(actions, PlayToCaller) == []
    assert call.next_deadline() is None  # nowhere to play yet: no pacing timer
    assert call.has_unplayed_audio

    actions = call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=2.0)

    assert payloads(actions) == deltas
    assert [type(a) for a in actions] == [PlayToCaller, SendPlaybackMark] * 3


def test_a_second_stream_started_changes_nothing():
    call = answered_call(now=0.0, max_call_s=100.0, wrap_up_s=10.0)
    assert call.next_deadline() == 90.0

    assert call.handle(StreamStarted(stream_sid="MZ2", call_sid="CA2"), now=50.0) == []

    assert call.next_deadline() == 90.0
    assert call.phase is CallPhase.ACTIVE
    assert of_type(call.handle(DeadlineReached(), now=100.0), EndCall) == [EndCall("max_duration")]


@pytest.mark.parametrize(
    ("event", "reason"),
    [(CallerHungUp(), "caller_hung_up"), (ModelDisconnected(reason="1006"), "model_disconnected")],
)
def test_peer_gone_ends_the_call(event, reason):
    call = answered_call(reconnect_model=False)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)

    assert call.handle(event, now=2.0) == [EndCall(reason)]

    assert call.phase is CallPhase.ENDED
    assert call.end_reason == reason
    assert call.next_deadline() is None


def test_hang_up_while_still_connecting_ends_the_call():
    call = CallStateMachine(settings())
    assert call.handle(CallerHungUp(), now=0.5) == [EndCall("caller_hung_up")]
    assert call.phase is CallPhase.ENDED


def test_handle_after_end_call_returns_nothing():
    call = answered_call()
    call.handle(CallerHungUp(), now=1.0)

    for event in [
        CallerAudio(mulaw_b64(20)), ModelAudio(response_id="resp_1", item_id="item_1", payload=mulaw_b64(100)),
        CallerStartedSpeaking(), DeadlineReached(), ModelSessionOpened(), CallerHungUp(),
        ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order", arguments="{}"),
    ]:
        assert call.handle(event, now=2.0) == []
    assert call.end_reason == "caller_hung_up"


def test_an_answered_call_without_greeting_counts_silence_from_the_moment_it_is_up():
    call = answered_call(now=2.0)
    assert call.next_deadline() == 602.0  # inactivity_prompt_s after the call went idle

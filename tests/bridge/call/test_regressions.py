"""Regression tests: each reproduces a core or wire bug found by review, now fixed."""

from __future__ import annotations

import contextlib
import json

import pytest
from callkit import NO_PACING, answered_call, echo, mulaw_b64, of_type, speak
from hypothesis import example, given, settings
from hypothesis import strategies as st

from switchboard.bridge.call.actions import (
    ClearCallerPlayback,
    DeleteModelItem,
    PlayToCaller,
    RecordMessage,
    RequestModelResponse,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerStartedSpeaking,
    DeadlineReached,
    ModelAudio,
    ModelResponseDone,
    ModelResponseStarted,
    ToolCallFinished,
    ToolCallRequested,
)
from switchboard.bridge.wire.openai_realtime import RealtimeProtocolError, parse_realtime_event
from switchboard.bridge.wire.twilio_media import TwilioProtocolError, parse_twilio_message


def test_deadline_reached_exactly_at_next_deadline_releases_paced_audio():
    # aioquic's contract: handling the timer at get_timer() makes progress. Here, a DeadlineReached at
    # exactly next_deadline() releases nothing and leaves next_deadline() unchanged, so a fake clock
    # (or a timer that fires on time) spins forever on the same deadline.
    call = answered_call(playback_lead_ms=250.0)  # binary-exact numbers: no float rounding involved
    call.handle(ModelResponseStarted(response_id="resp_1"), now=8.0)
    for i in range(6):
        call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=mulaw_b64(125, fill=i)), now=8.0)
    deadline = call.next_deadline()
    assert deadline == 8.125  # 3 chunks (375 ms) sent; the next one is due when the lead is back to 250 ms

    actions = call.handle(DeadlineReached(), now=deadline)

    assert len(of_type(actions, PlayToCaller)) == 1
    assert call.next_deadline() > deadline


def test_pacing_with_the_default_lead_progresses_at_each_next_deadline():
    # The example: lead 300 ms, ten 100 ms deltas at once, timer fired at exactly next_deadline().
    call = answered_call(playback_lead_ms=300.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=10.0)
    released = 0
    for i in range(10):
        actions = call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=mulaw_b64(100, i)), now=10.0)
        released += len(of_type(actions, PlayToCaller))

    for _ in range(20):
        if released == 10:
            break
        released += len(of_type(call.handle(DeadlineReached(), now=call.next_deadline()), PlayToCaller))

    assert released == 10


def test_barge_in_deletes_a_never_heard_item_of_a_response_that_is_already_done():
    # Tool round trip faster than playback: resp_2's audio is all still queued behind resp_1's when the
    # caller speaks. item_2 was never sent, let alone heard, but the model keeps it as if it were said.
    call = answered_call(playback_lead_ms=300.0)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=10.0)
    call.handle(ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order", arguments="{}"),
                now=10.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=10.05)
    [request] = of_type(call.handle(ToolCallFinished(call_id="call_1", output="{}"), now=10.06), RequestModelResponse)
    speak(call, response_id="resp_2", item_id="item_2", chunks_ms=[100] * 5, now=10.07, request_id=request.request_id)
    call.handle(ModelResponseDone(response_id="resp_2", status="completed"), now=10.08)

    actions = call.handle(CallerStartedSpeaking(), now=10.1)

    assert actions[0] == ClearCallerPlayback()
    assert TruncateModelAudio(item_id="item_1", audio_end_ms=100) in actions  # playing since 10.0
    assert DeleteModelItem(item_id="item_2") in actions


def test_transcript_arriving_after_the_barge_in_records_the_part_that_was_heard():
    # A long answer is interrupted before the server finished generating it; the (partial) transcript
    # arrives after the cancel. The caller heard 600 ms of it, but nothing is ever recorded.
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 20, now=10.0)
    echo(call, marks[:6], now=10.6)
    assert TruncateModelAudio(item_id="item_1", audio_end_ms=600) in call.handle(CallerStartedSpeaking(), now=10.6)
    words = " ".join(f"w{i}" for i in range(20))

    actions = call.handle(AssistantTranscriptDone(response_id="resp_1", item_id="item_1", transcript=words), now=10.71)

    [record] = of_type(actions, RecordMessage)
    assert record.message_id == "assistant:item_1"
    assert record.text == "w0 w1 w2 w3 w4 w5…"


# --- wire/ -------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_twilio_messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop"])},
    optional={"streamSid": _json, "media": _json, "mark": _json, "start": _json, "dtmf": _json},
)


@settings(max_examples=200, database=None, deadline=None)
@example('{"event": "start", "start": null}')
@example('{"event": "start", "start": ["CA1"]}')
@given(_twilio_messages.map(json.dumps) | st.text() | st.binary())
def test_parse_twilio_message_returns_or_raises_its_protocol_error(frame):
    # Today a `start` whose value is not an object escapes as AttributeError, which the
    # Twilio reader does not expect from the parser.
    with contextlib.suppress(TwilioProtocolError):
        parse_twilio_message(frame)


def test_realtime_audio_delta_that_is_not_a_string_is_a_protocol_error():
    # parse_realtime_event accepts any JSON type for ids, audio and transcripts. The core then raises
    # (here TypeError from len(5)), so a malformed frame from the model crashes the call instead of
    # being counted and skipped.
    frame = '{"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "delta": 5}'
    with pytest.raises(RealtimeProtocolError):
        event = parse_realtime_event(frame)
        call = answered_call()
        call.handle(event, now=1.0)


def test_realtime_transcript_that_is_not_a_string_is_a_protocol_error():
    frame = '{"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_1", "transcript": 42}'
    with pytest.raises(RealtimeProtocolError):
        event = parse_realtime_event(frame)
        answered_call().handle(event, now=1.0)

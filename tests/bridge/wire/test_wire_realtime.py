"""OpenAI Realtime GA wire format: golden server events (protocols.md §1.6) in, client events out.

Every client event we encode must validate against the openai SDK's GA type with no unknown field
anywhere in the tree; every golden server event must validate against the SDK's server event type,
so the fixtures stay faithful to the provider.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from switchboard.bridge.call.actions import (
    AppendCallerAudio,
    CallAction,
    CancelModelResponse,
    ClearCallerPlayback,
    ConfigureModelSession,
    DeleteModelItem,
    DiscardCallerInput,
    EndCall,
    PlayToCaller,
    RecordMessage,
    RequestModelResponse,
    SendPlaybackMark,
    SendToolResult,
    StartToolCall,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudio,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CallerTranscribed,
    CallerTurnCommitted,
    ModelAudio,
    ModelErrored,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionConfigured,
    ModelSessionOpened,
    PlaybackMarked,
    StreamStarted,
    ToolCallFinished,
    ToolCallRequested,
)
from switchboard.bridge.call.state_machine import CallSettings, CallStateMachine
from switchboard.bridge.wire.openai_realtime import (
    RealtimeProtocolError,
    encode_realtime_action,
    parse_realtime_event,
)

CLIENT_EVENT = pydantic.TypeAdapter(RealtimeClientEvent)
SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)

AUDIO = "//////////9/f39/f39/f3////////8="  # base64 μ-law, passed through untouched
LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order by its number.",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}
USAGE = {
    "total_tokens": 253, "input_tokens": 127, "output_tokens": 126,
    "input_token_details": {"text_tokens": 119, "audio_tokens": 8, "image_tokens": 0, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 36, "audio_tokens": 90},
}


def response(status: str, *, usage: dict[str, Any] | None = None, request_id: str | None = "sb_req_2") -> dict:
    return {
        "object": "realtime.response", "id": "resp_CDxE1", "status": status, "status_details": None, "output": [],
        "conversation_id": "conv_CDxD9", "output_modalities": ["audio"], "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}, "usage": usage,
        "metadata": {"switchboard_request_id": request_id} if request_id else None,
    }


GOLDEN_SERVER_EVENTS: list[tuple[dict[str, Any], object]] = [
    (
        {"type": "session.created", "event_id": "event_CDx01",
         "session": {"type": "realtime", "object": "realtime.session", "id": "sess_CDx01", "model": "gpt-realtime",
                     "output_modalities": ["audio"], "instructions": "Your knowledge cutoff is 2023-10.",
                     "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None,
                     "prompt": None, "expires_at": 0, "include": None}},
        ModelSessionOpened(),
    ),
    (
        {"type": "session.updated", "event_id": "event_CDx02",
         "session": {"type": "realtime", "object": "realtime.session", "id": "sess_CDx01", "model": "gpt-realtime",
                     "output_modalities": ["audio"], "instructions": "You answer the phone for Acme."}},
        ModelSessionConfigured(),
    ),
    (
        {"type": "input_audio_buffer.speech_started", "event_id": "event_CDx03", "audio_start_ms": 1000,
         "item_id": "item_CDx03"},
        CallerStartedSpeaking(item_id="item_CDx03", audio_start_ms=1000),
    ),
    (
        {"type": "input_audio_buffer.speech_stopped", "event_id": "event_CDx04", "audio_end_ms": 2000,
         "item_id": "item_CDx03"},
        CallerStoppedSpeaking(item_id="item_CDx03"),
    ),
    (
        {"type": "input_audio_buffer.committed", "event_id": "event_CDx05", "previous_item_id": "item_CDx02",
         "item_id": "item_CDx03"},
        CallerTurnCommitted(item_id="item_CDx03", previous_item_id="item_CDx02"),
    ),
    (
        {"type": "conversation.item.input_audio_transcription.completed", "event_id": "event_CDx06",
         "item_id": "item_CDx03", "content_index": 0, "transcript": "Where is my order?",
         "usage": {"type": "duration", "seconds": 2}},
        CallerTranscribed(item_id="item_CDx03", transcript="Where is my order?"),
    ),
    (
        {"type": "response.created", "event_id": "event_CDx07", "response": response("in_progress")},
        ModelResponseStarted(response_id="resp_CDxE1", request_id="sb_req_2"),
    ),
    (
        {"type": "response.created", "event_id": "event_CDx07b", "response": response("in_progress", request_id=None)},
        ModelResponseStarted(response_id="resp_CDxE1", request_id=None),
    ),
    (
        {"type": "response.output_audio.delta", "event_id": "event_CDx08", "response_id": "resp_CDxE1",
         "item_id": "item_CDx04", "output_index": 0, "content_index": 0, "delta": AUDIO},
        ModelAudio(response_id="resp_CDxE1", item_id="item_CDx04", payload=AUDIO),
    ),
    (
        {"type": "response.output_audio_transcript.done", "event_id": "event_CDx09", "response_id": "resp_CDxE1",
         "item_id": "item_CDx04", "output_index": 0, "content_index": 0, "transcript": "It shipped yesterday."},
        AssistantTranscriptDone(response_id="resp_CDxE1", item_id="item_CDx04", transcript="It shipped yesterday."),
    ),
    (
        {"type": "response.output_text.done", "event_id": "event_CDx10", "response_id": "resp_CDxE1",
         "item_id": "item_CDx04", "output_index": 0, "content_index": 0, "text": "It shipped yesterday."},
        AssistantTranscriptDone(response_id="resp_CDxE1", item_id="item_CDx04", transcript="It shipped yesterday."),
    ),
    (
        {"type": "response.function_call_arguments.done", "event_id": "event_CDx11", "response_id": "resp_CDxE1",
         "item_id": "item_CDx05", "output_index": 1, "call_id": "call_Q4a", "name": "lookup_order",
         "arguments": "{\"id\":\"A7\"}"},
        ToolCallRequested(response_id="resp_CDxE1", call_id="call_Q4a", name="lookup_order", arguments='{"id":"A7"}'),
    ),
    (
        {"type": "response.done", "event_id": "event_CDx12", "response": response("completed", usage=USAGE)},
        ModelResponseDone(response_id="resp_CDxE1", status="completed", usage=USAGE),
    ),
    (
        {"type": "response.done", "event_id": "event_CDx13", "response": response("cancelled")},
        ModelResponseDone(response_id="resp_CDxE1", status="cancelled", usage=None),
    ),
    (
        {"type": "error", "event_id": "event_CDx14",
         "error": {"type": "invalid_request_error", "code": "conversation_already_has_active_response",
                   "message": "Conversation already has an active response in progress: resp_CDxE1. Wait until "
                              "the response is finished before creating a new one.",
                   "param": None, "event_id": "sb_req_3"}},
        ModelErrored(code="conversation_already_has_active_response",
                     message="Conversation already has an active response in progress: resp_CDxE1. Wait until "
                             "the response is finished before creating a new one.",
                     error_type="invalid_request_error", request_id="sb_req_3"),
    ),
    (
        {"type": "error", "event_id": "event_CDx15",
         "error": {"type": "invalid_request_error", "code": "response_cancel_not_active",
                   "message": "Cancellation failed: no active response found.", "param": None, "event_id": None}},
        ModelErrored(code="response_cancel_not_active", message="Cancellation failed: no active response found.",
                     error_type="invalid_request_error", request_id=None),
    ),
]

IGNORED_SERVER_EVENTS: list[dict[str, Any]] = [
    {"type": "rate_limits.updated", "event_id": "event_CDx20",
     "rate_limits": [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60}]},
    {"type": "response.output_audio.done", "event_id": "event_CDx21", "response_id": "resp_CDxE1",
     "item_id": "item_CDx04", "output_index": 0, "content_index": 0},
    {"type": "conversation.item.truncated", "event_id": "event_CDx22", "item_id": "item_CDx04", "content_index": 0,
     "audio_end_ms": 600},
    {"type": "input_audio_buffer.cleared", "event_id": "event_CDx23"},
]


def assert_no_unknown_fields(value: object, path: str = "$") -> None:
    """Walk a parsed SDK model: any field the SDK type does not declare ends up in `model_extra`."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"unknown fields at {path}: {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            assert_no_unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_no_unknown_fields(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_unknown_fields(item, f"{path}.{key}")


def validated_client_event(text: str) -> Any:
    event = CLIENT_EVENT.validate_python(json.loads(text))
    assert_no_unknown_fields(event)
    return event


@pytest.mark.parametrize(
    ("message", "event"), GOLDEN_SERVER_EVENTS, ids=[m["event_id"] + ":" + m["type"] for m, _ in GOLDEN_SERVER_EVENTS]
)
def test_parses_golden_server_events(message, event):
    SERVER_EVENT.validate_python(message)  # the fixture is a real GA server event
    assert parse_realtime_event(json.dumps(message)) == event
    assert parse_realtime_event(json.dumps(message).encode()) == event


@pytest.mark.parametrize("message", IGNORED_SERVER_EVENTS, ids=[m["type"] for m in IGNORED_SERVER_EVENTS])
def test_events_the_call_does_not_act_on_parse_to_none(message):
    SERVER_EVENT.validate_python(message)
    assert parse_realtime_event(json.dumps(message)) is None


def test_unknown_event_types_parse_to_none():
    assert parse_realtime_event('{"type": "response.brand_new_thing", "event_id": "event_1"}') is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{oops", "malformed_json"),
        (b"\x80", "malformed_json"),
        ("[]", "no_type"),
        ('{"event_id": "event_1"}', "no_type"),
        ('{"type": 7}', "no_type"),
        ('{"type": "response.output_audio.delta", "response_id": "resp_1"}', "missing_fields:response.output_audio.delta"),
        ('{"type": "response.created"}', "missing_fields:response.created"),
        ('{"type": "response.created", "response": {"metadata": {}}}', "missing_fields:response.created"),
        ('{"type": "response.done", "response": []}', "missing_fields:response.done"),
        ('{"type": "input_audio_buffer.committed"}', "missing_fields:input_audio_buffer.committed"),
        ('{"type": "response.function_call_arguments.done", "response_id": "r"}',
         "missing_fields:response.function_call_arguments.done"),
        ('{"type": "error", "error": "boom"}', "missing_fields:error"),
    ],
)
def test_rejects_malformed_server_events_with_a_fixed_kind(raw, kind):
    with pytest.raises(RealtimeProtocolError) as caught:
        parse_realtime_event(raw)
    assert caught.value.kind == kind


# --- client events -------------------------------------------------------------------------------


def test_session_update_for_a_call_matches_the_contract_and_the_sdk_type():
    call = CallStateMachine(
        CallSettings(instructions="You answer the phone for Acme. We are open now.", greeting="Hi!", voice="cedar",
                     speed=1.1, tools=(LOOKUP_ORDER,), transcription_model="gpt-transcribe")
    )
    [configure] = [a for a in call.handle(ModelSessionOpened(), now=0.0) if isinstance(a, ConfigureModelSession)]

    text = encode_realtime_action(configure)

    assert text is not None
    event = validated_client_event(text)
    assert event.type == "session.update"
    assert json.loads(text) == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "You answer the phone for Acme. We are open now.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "noise_reduction": {"type": "near_field"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 300,
                                       "silence_duration_ms": 500, "create_response": True,
                                       "interrupt_response": True},
                    "transcription": {"model": "gpt-transcribe"},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar", "speed": 1.1},
            },
            "tools": [LOOKUP_ORDER],
            "tool_choice": "auto",
        },
    }


def test_session_update_without_tools_or_transcription_is_valid():
    text = encode_realtime_action(ConfigureModelSession(instructions="Be brief.", voice="marin", speed=1.0))
    session = json.loads(text)["session"]
    validated_client_event(text)
    assert "tools" not in session and "tool_choice" not in session
    assert "transcription" not in session["audio"]["input"]


@pytest.mark.parametrize("turn_detection", [
    {"type": "server_vad", "threshold": 0.7, "silence_duration_ms": 1500, "idle_timeout_ms": 6000},
    {"type": "semantic_vad", "eagerness": "low"},
])
def test_the_tenants_turn_detection_goes_out_as_given_and_is_valid(turn_detection):
    text = encode_realtime_action(ConfigureModelSession(instructions="Be brief.", voice="marin", speed=1.0,
                                                        turn_detection=turn_detection))
    validated_client_event(text)
    assert json.loads(text)["session"]["audio"]["input"]["turn_detection"] == turn_detection


def test_discarding_caller_input_is_an_input_audio_buffer_clear():
    text = encode_realtime_action(DiscardCallerInput())
    validated_client_event(text)
    assert json.loads(text) == {"type": "input_audio_buffer.clear"}


GOLDEN_CLIENT_EVENTS: list[tuple[CallAction, dict[str, Any]]] = [
    (AppendCallerAudio(AUDIO), {"type": "input_audio_buffer.append", "audio": AUDIO}),
    (
        RequestModelResponse(request_id="sb_req_1", instructions='Greet the caller with exactly: "Hi!"'),
        {"type": "response.create", "event_id": "sb_req_1",
         "response": {"metadata": {"switchboard_request_id": "sb_req_1"},
                      "instructions": 'Greet the caller with exactly: "Hi!"'}},
    ),
    (
        RequestModelResponse(request_id="sb_req_2"),
        {"type": "response.create", "event_id": "sb_req_2",
         "response": {"metadata": {"switchboard_request_id": "sb_req_2"}}},
    ),
    (CancelModelResponse(response_id="resp_CDxE1"), {"type": "response.cancel", "response_id": "resp_CDxE1"}),
    (CancelModelResponse(), {"type": "response.cancel"}),
    (
        TruncateModelAudio(item_id="item_CDx04", audio_end_ms=600),
        {"type": "conversation.item.truncate", "item_id": "item_CDx04", "content_index": 0, "audio_end_ms": 600},
    ),
    (DeleteModelItem(item_id="item_CDx04"), {"type": "conversation.item.delete", "item_id": "item_CDx04"}),
    (
        SendToolResult(call_id="call_Q4a", output='{"status": "shipped"}'),
        {"type": "conversation.item.create",
         "item": {"type": "function_call_output", "call_id": "call_Q4a", "output": '{"status": "shipped"}'}},
    ),
]


@pytest.mark.parametrize(("action", "golden"), GOLDEN_CLIENT_EVENTS, ids=[g["type"] for _, g in GOLDEN_CLIENT_EVENTS])
def test_encodes_client_events(action, golden):
    text = encode_realtime_action(action)
    assert text is not None
    assert json.loads(text) == golden
    assert validated_client_event(text).type == golden["type"]


def test_a_request_id_round_trips_through_response_created_metadata():
    text = encode_realtime_action(RequestModelResponse(request_id="sb_req_7"))
    metadata = json.loads(text)["response"]["metadata"]
    created = {"type": "response.created", "event_id": "event_1", "response": {**response("in_progress"),
                                                                               "metadata": metadata}}
    assert parse_realtime_event(json.dumps(created)) == ModelResponseStarted("resp_CDxE1", "sb_req_7")


@pytest.mark.parametrize(
    "action",
    [PlayToCaller(AUDIO), SendPlaybackMark(name="m1", item_id=None, audio_end_ms=0), ClearCallerPlayback(),
     StartToolCall(call_id="c", name="n", arguments="{}"), EndCall("caller_hung_up"),
     RecordMessage(seq=1, role="user", text="hi", message_id="user:i")],
)
def test_actions_not_for_the_model_encode_to_none(action):
    assert encode_realtime_action(action) is None


def test_every_client_event_a_whole_call_produces_is_a_valid_ga_event():
    """Drive a call through greeting, caller audio, barge-in and a tool; encode all it sends the model."""
    call = CallStateMachine(CallSettings(instructions="Acme.", greeting="Hi!", tools=(LOOKUP_ORDER,),
                                         playback_lead_ms=60_000.0))
    actions: list[CallAction] = []
    actions += call.handle(StreamStarted(stream_sid="MZ1", call_sid="CA1"), now=0.0)
    actions += call.handle(CallerAudio(AUDIO), now=0.01)
    actions += call.handle(ModelSessionOpened(), now=0.1)
    actions += call.handle(ModelResponseStarted("resp_1", "sb_req_1"), now=0.2)
    audio = [call.handle(ModelAudio("resp_1", "item_1", AUDIO * 50), now=0.3) for _ in range(4)]
    actions += [a for batch in audio for a in batch]
    first_mark = next(a for a in actions if isinstance(a, SendPlaybackMark))
    actions += call.handle(PlaybackMarked(first_mark.name), now=0.5)
    actions += call.handle(CallerStartedSpeaking(item_id="item_2"), now=0.6)
    actions += call.handle(ModelResponseDone("resp_1", "cancelled"), now=0.65)
    actions += call.handle(ModelResponseStarted("resp_2"), now=1.0)
    actions += call.handle(ToolCallRequested("resp_2", "call_1", "lookup_order", '{"id": "A7"}'), now=1.1)
    actions += call.handle(ToolCallFinished("call_1", '{"status": "shipped"}'), now=1.2)
    actions += call.handle(ModelAudio("resp_2", "item_3", AUDIO), now=1.3)
    actions += call.handle(CallerStartedSpeaking(item_id="item_4"), now=1.3)  # item_3 never heard: deleted
    actions += call.handle(ModelResponseDone("resp_2", "cancelled"), now=1.4)

    sent = [text for text in map(encode_realtime_action, actions) if text is not None]
    types = [validated_client_event(text).type for text in sent]

    assert set(types) == {
        "session.update", "response.create", "input_audio_buffer.append", "response.cancel",
        "conversation.item.truncate", "conversation.item.delete", "conversation.item.create",
    }
    assert types[0] == "session.update"

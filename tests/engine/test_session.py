"""The Realtime protocol core without models: client events in, server events and work out.

A fake frame classifier calls a frame speech when it is not mu-law silence (0xFF), so positions are exact.
Every server event produced is validated against the openai SDK's GA types.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from switchboard.engine.session import RealtimeSession, Send, StartResponse, StopResponse, Transcribe

SILENCE = b"\xff" * 8  # 1 ms of mu-law silence
TONE = b"\x00" * 8  # 1 ms of loud mu-law


def frame_is_loud(frame: bytes) -> bool:
    return frame[0] != 0xFF


def new_session() -> RealtimeSession:
    return RealtimeSession(classifier_factory=lambda threshold: frame_is_loud)


def sent(outputs: list[Any]) -> list[dict[str, Any]]:
    return [o.event for o in outputs if isinstance(o, Send)]


def types(outputs: list[Any]) -> list[str]:
    return [e["type"] for e in sent(outputs)]


def append(session: RealtimeSession, mulaw: bytes) -> list[Any]:
    return session.handle({"type": "input_audio_buffer.append", "audio": base64.b64encode(mulaw).decode()})


def configure(session: RealtimeSession, **turn_detection: Any) -> None:
    session.handle({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Help callers.",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "threshold": 0.9, **turn_detection}},
                  "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "tools": [{"type": "function", "name": "end_call", "description": "End the call",
                   "parameters": {"type": "object", "properties": {}}}]}})


def test_speech_positions_include_prefix_padding_and_the_silence(
    validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    session = new_session()
    opened = session.opened()
    configure(session, prefix_padding_ms=300, silence_duration_ms=500)
    outputs = append(session, SILENCE * 1000 + TONE * 1200 + SILENCE * 700)
    events = sent(outputs)
    assert types(outputs) == [
        "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done", "response.created",
    ]
    assert events[0]["audio_start_ms"] == 1000 - 300
    assert events[1]["audio_end_ms"] == 1000 + 1200 + 500
    item_id = events[0]["item_id"]
    assert events[1]["item_id"] == item_id == events[2]["item_id"] == events[3]["item"]["id"]
    transcribe = next(o for o in outputs if isinstance(o, Transcribe))
    assert len(transcribe.mulaw) == (2700 - 700) * 8
    assert any(isinstance(o, StartResponse) for o in outputs)
    for event in sent(opened) + events:
        validate_server_event(event)


def test_create_response_false_commits_without_answering() -> None:
    session = new_session()
    configure(session, create_response=False)
    outputs = append(session, SILENCE * 400 + TONE * 400 + SILENCE * 600)
    assert "input_audio_buffer.committed" in types(outputs)
    assert "response.created" not in types(outputs)


def test_speech_during_a_response_cancels_it_as_turn_detected(
    validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    session = new_session()
    configure(session)
    created = session.handle({"type": "response.create"})
    response_id = sent(created)[0]["response"]["id"]
    _item, begun = session.response_message_begin(response_id)
    session.response_message_sentence(response_id, _item, "Hello there.", SILENCE * 800)
    outputs = append(session, TONE * 100)
    assert types(outputs)[0] == "input_audio_buffer.speech_started"
    assert StopResponse(response_id) in outputs
    done = sent(outputs)[-1]
    assert done["type"] == "response.done"
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    for event in sent(created) + sent(begun) + sent(outputs):
        validate_server_event(event)


def test_cancel_without_a_response_is_an_error_naming_the_client_event() -> None:
    session = new_session()
    [error] = sent(session.handle({"type": "response.cancel", "event_id": "evt_1"}))
    assert error["error"]["code"] == "response_cancel_not_active"
    assert error["error"]["event_id"] == "evt_1"


def test_a_second_response_while_one_is_active_is_refused() -> None:
    session = new_session()
    session.handle({"type": "response.create"})
    [error] = sent(session.handle({"type": "response.create"}))
    assert error["error"]["code"] == "conversation_already_has_active_response"


def test_truncate_cuts_the_audio_and_refuses_beyond_it(
    validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    session = new_session()
    response_id = sent(session.handle({"type": "response.create"}))[0]["response"]["id"]
    item_id, _ = session.response_message_begin(response_id)
    session.response_message_sentence(response_id, item_id, "Hello there.", SILENCE * 1000)
    session.response_message_end(response_id, item_id)
    finished = sent(session.response_finish(response_id))
    assert finished[0]["response"]["status"] == "completed"
    assert finished[0]["response"]["usage"]["output_token_details"]["audio_tokens"] == 20
    [too_far] = sent(session.handle({"type": "conversation.item.truncate", "item_id": item_id,
                                     "content_index": 0, "audio_end_ms": 1500}))
    assert too_far["type"] == "error" and "1000ms" in too_far["error"]["message"]
    [truncated] = sent(session.handle({"type": "conversation.item.truncate", "item_id": item_id,
                                       "content_index": 0, "audio_end_ms": 400}))
    assert truncated == {**truncated, "type": "conversation.item.truncated", "audio_end_ms": 400}
    [retrieved] = sent(session.handle({"type": "conversation.item.retrieve", "item_id": item_id}))
    assert len(base64.b64decode(retrieved["item"]["content"][0]["audio"])) == 400 * 8
    for event in finished + [too_far, truncated, retrieved]:
        validate_server_event(event)


def test_retrieve_returns_the_callers_committed_audio_and_delete_removes_it() -> None:
    session = new_session()
    configure(session, prefix_padding_ms=100, silence_duration_ms=200)
    outputs = append(session, SILENCE * 500 + TONE * 300 + SILENCE * 300)
    item_id = sent(outputs)[0]["item_id"]
    [retrieved] = sent(session.handle({"type": "conversation.item.retrieve", "item_id": item_id}))
    audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
    assert len(audio) == (100 + 300 + 200) * 8 and audio[100 * 8: 400 * 8] == TONE * 300
    assert types(session.handle({"type": "conversation.item.delete", "item_id": item_id})) == [
        "conversation.item.deleted"]
    assert types(session.handle({"type": "conversation.item.retrieve", "item_id": item_id})) == ["error"]


def test_function_call_round_trip_and_tool_output_reaches_the_brain(
    validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    session = new_session()
    configure(session)
    session.handle({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "bye"}]}})
    response_id = sent(session.handle({"type": "response.create"}))[0]["response"]["id"]
    call_events = sent(session.response_function_call(response_id, "end_call", {}))
    done = sent(session.response_finish(response_id))[0]
    assert [e["type"] for e in call_events] == [
        "response.output_item.added", "conversation.item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "conversation.item.done"]
    call_id = call_events[3]["call_id"]
    assert done["response"]["output"][0]["call_id"] == call_id
    added = sent(session.handle({"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": call_id, "output": json.dumps({"ok": True})}}))
    next_id = sent(session.handle({"type": "response.create"}))[0]["response"]["id"]
    turns = session.brain_input(next_id).turns
    assert [type(t).__name__ for t in turns] == ["CallerSaid", "ToolCalled", "ToolReturned"]
    for event in call_events + [done] + added:
        validate_server_event(event)


def test_session_update_requires_type_and_refuses_other_audio_formats() -> None:
    session = new_session()
    [missing] = sent(session.handle({"type": "session.update", "session": {"instructions": "x"}}))
    assert missing["error"]["code"] == "missing_required_parameter"
    [pcm] = sent(session.handle({"type": "session.update", "session": {
        "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}}))
    assert pcm["type"] == "error"
    [unknown] = sent(session.handle({"type": "response.audio.delta"}))
    assert unknown["error"]["code"] == "invalid_value"


def test_manual_commit_needs_100_ms() -> None:
    session = new_session()
    session.handle({"type": "session.update", "session": {"type": "realtime",
                                                          "audio": {"input": {"turn_detection": None}}}})
    append(session, TONE * 60)
    [error] = sent(session.handle({"type": "input_audio_buffer.commit"}))
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    append(session, TONE * 60)
    assert types(session.handle({"type": "input_audio_buffer.commit"})) == [
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert types(session.handle({"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]


def test_the_current_model_names_are_accepted() -> None:
    from switchboard.openai_models import DEFAULT_REALTIME_MODEL, DEFAULT_TRANSCRIPTION_MODEL

    session = new_session()
    [updated] = sent(session.handle({"type": "session.update", "session": {
        "type": "realtime", "model": DEFAULT_REALTIME_MODEL,
        "audio": {"input": {"format": {"type": "audio/pcmu"},
                            "transcription": {"model": DEFAULT_TRANSCRIPTION_MODEL, "language": "en"}}}}}))
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == DEFAULT_TRANSCRIPTION_MODEL

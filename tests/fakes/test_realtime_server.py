"""The fake Realtime server speaks GA Realtime: checked with the openai SDK's own client and types."""

from __future__ import annotations

import asyncio
import base64
import json
import typing
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.fakes.realtime_server import (
    FakeRealtimeServer,
    FakeRealtimeSession,
    function_call,
    sequence,
    stream_audio,
)
from switchboard.simulator.speech import mulaw_silence, mulaw_to_pcm16, rms, synthesize_mulaw

API_KEY = "sk-test-fake"
PCMU_SESSION = {
    "type": "realtime",
    "instructions": "You answer the phone for Acme.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "noise_reduction": {"type": "near_field"},
            "turn_detection": {"type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500, "create_response": True,
                               "interrupt_response": True},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
    "tools": [{"type": "function", "name": "lookup_order", "description": "Look up an order.",
               "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}],
    "tool_choice": "auto",
}

_SERVER_EVENT_MODELS = {}
for _member in typing.get_args(typing.get_args(RealtimeServerEvent)[0]):
    _literal = _member.model_fields["type"].annotation
    _SERVER_EVENT_MODELS[typing.get_args(_literal)[0]] = pydantic.TypeAdapter(_member)


def assert_valid_server_events(session: FakeRealtimeSession) -> None:
    """Everything the fake sent parses as the SDK's GA server event of that type."""
    for event in session.sent:
        adapter = _SERVER_EVENT_MODELS[event["type"]]
        adapter.validate_python(event)


@pytest.fixture
async def server() -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(api_key=API_KEY) as fake:
        yield fake


async def raw_client(server: FakeRealtimeServer) -> ClientConnection:
    return await connect(f"{server.realtime_url}?model=gpt-realtime",
                         additional_headers={"Authorization": f"Bearer {API_KEY}"})


async def recv_until(connection: ClientConnection, type_: str, timeout_s: float = 2.0) -> list[dict[str, Any]]:
    """Events received up to and including the first of `type_`."""
    events = []
    async with asyncio.timeout(timeout_s):
        while True:
            event = json.loads(await connection.recv())
            events.append(event)
            if event["type"] == type_:
                return events


async def test_the_openai_sdk_runs_a_whole_exchange_against_the_fake(server: FakeRealtimeServer) -> None:
    server.on("response.create", stream_audio(ms=1_000, transcript="Your order shipped on Monday."))
    client = AsyncOpenAI(api_key=API_KEY, websocket_base_url=server.base_ws_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=PCMU_SESSION)  # type: ignore[arg-type]
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.turn_detection.threshold == 0.9  # type: ignore[union-attr]
        assert updated.session.audio.output.voice == "marin"  # type: ignore[union-attr]

        caller_audio = synthesize_mulaw("Where is my order?")
        await conn.input_audio_buffer.append(audio=base64.b64encode(caller_audio).decode())
        await conn.response.create()
        types, deltas = [], []
        while True:
            event = await conn.recv()
            types.append(event.type)
            if event.type == "response.output_audio.delta":
                deltas.append(base64.b64decode(event.delta))
            if event.type == "rate_limits.updated":
                break
        done_index = types.index("response.done")
        assert types[:4] == ["response.created", "response.output_item.added", "conversation.item.added",
                             "response.content_part.added"]
        assert types[done_index - 5 : done_index] == [
            "response.output_audio.done", "response.output_audio_transcript.done",
            "response.content_part.done", "response.output_item.done", "conversation.item.done"]
        assert "response.output_audio_transcript.delta" in types
        assert types[-2:] == ["response.done", "rate_limits.updated"]
        assert sum(len(d) for d in deltas) == 8 * 1_000
        assert len(set(deltas)) == len(deltas), "each delta carries distinct audio"
        assert all(rms(mulaw_to_pcm16(d)) > 1_000 for d in deltas), "audio is a tone, not silence"

        session = await server.wait_for_session()
        assert [e["type"] for e in session.received] == [
            "session.update", "input_audio_buffer.append", "response.create"]
        assert session.input_audio == caller_audio
        assert session.protocol_errors == []
        assert_valid_server_events(session)


async def test_cancel_and_truncate_through_the_sdk(server: FakeRealtimeServer) -> None:
    server.on("response.create", stream_audio(ms=3_000, transcript="A long answer."))
    client = AsyncOpenAI(api_key=API_KEY, websocket_base_url=server.base_ws_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session=PCMU_SESSION)  # type: ignore[arg-type]
        await conn.recv()
        await conn.response.create()
        item_id = None
        deltas = 0
        while deltas < 3:
            event = await conn.recv()
            if event.type == "response.output_audio.delta":
                item_id = event.item_id
                deltas += 1
        await conn.response.cancel()
        while (event := await conn.recv()).type != "response.done":
            assert event.type != "response.output_audio.delta" or deltas < 4
        assert event.response.status == "cancelled"
        assert event.response.status_details.reason == "client_cancelled"  # type: ignore[union-attr]
        assert event.response.output[0].status == "incomplete"  # type: ignore[union-attr,index]
        assert (await conn.recv()).type == "rate_limits.updated"

        assert item_id is not None
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=250)
        truncated = await conn.recv()
        assert truncated.type == "conversation.item.truncated"
        assert truncated.audio_end_ms == 250

        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=900,
                                              event_id="trunc-2")
        error = await conn.recv()
        assert error.type == "error"
        assert error.error.event_id == "trunc-2"
        assert "shorter than 900ms" in error.error.message

        await conn.response.cancel(event_id="cancel-2")
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "response_cancel_not_active"

        session = await server.wait_for_session()
        assert session.item_audio_ms(item_id) == 250
        assert session.protocol_errors == []
        assert_valid_server_events(session)


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"type": "session.update", "session": {"type": "realtime", "temperature": 0.8}},
         "unknown_parameter", "session.temperature"),
        ({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "silence_ms": 500}}}}},
         "unknown_parameter", "session.audio.input.turn_detection.silence_ms"),
        ({"type": "session.update", "session": {"instructions": "no type"}},
         "missing_required_parameter", "session.type"),
        ({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0},
         "missing_required_parameter", "audio_end_ms"),
        ({"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
          "audio_end_ms": "250"}, "invalid_value", "audio_end_ms"),
        ({"type": "response.audio.delta", "delta": ""}, "invalid_value", "type"),
        ({"type": "output_audio_buffer.clear"}, "invalid_value", "type"),
    ],
)
async def test_events_the_real_api_rejects_get_an_error_and_are_recorded(
    server: FakeRealtimeServer, event: dict[str, Any], code: str, param: str
) -> None:
    connection = await raw_client(server)
    async with connection:
        await recv_until(connection, "session.created")
        await connection.send(json.dumps({**event, "event_id": "evt-bad"}))
        error = (await recv_until(connection, "error"))[-1]
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == code
        assert error["error"]["param"] == param
        assert error["error"]["event_id"] == "evt-bad"
        session = await server.wait_for_session()
        assert [(e.code, e.param) for e in session.protocol_errors] == [(code, param)]


async def test_upgrade_needs_the_bearer_key(server: FakeRealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as raised:
        await connect(f"{server.realtime_url}?model=gpt-realtime",
                      additional_headers={"Authorization": "Bearer wrong"})
    assert raised.value.response.status_code == 401
    assert server.sessions == []


async def test_speech_started_interrupts_and_speech_stopped_answers(server: FakeRealtimeServer) -> None:
    server.on("response.create", sequence(stream_audio(ms=2_000, transcript="Greeting."),
                                          stream_audio(ms=300, transcript="Answer.")))
    connection = await raw_client(server)
    async with connection:
        await recv_until(connection, "session.created")
        await connection.send(json.dumps({"type": "session.update", "session": PCMU_SESSION}))
        await recv_until(connection, "session.updated")
        await connection.send(json.dumps({"type": "response.create"}))
        await recv_until(connection, "response.output_audio.delta")
        await connection.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(mulaw_silence(1_000)).decode()}))
        session = await server.wait_for_session()
        await session.wait_for_event("input_audio_buffer.append")

        item_id = await session.speech_started()
        events = await recv_until(connection, "rate_limits.updated")
        assert events[0] == {"type": "input_audio_buffer.speech_started", "event_id": events[0]["event_id"],
                             "audio_start_ms": 700, "item_id": item_id}
        done = events[-2]
        assert done["type"] == "response.done"
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"

        assert await session.speech_stopped() == item_id
        events = await recv_until(connection, "rate_limits.updated")
        types = [e["type"] for e in events]
        assert types[:5] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                             "conversation.item.added", "conversation.item.done", "response.created"]
        assert events[1]["item_id"] == item_id
        assert [e["response"]["status"] for e in events if e["type"] == "response.done"] == ["completed"]
        assert len(session.responses) == 2 and session.responses[1].request is None

        await connection.send(json.dumps({"type": "conversation.item.retrieve", "item_id": item_id}))
        retrieved = (await recv_until(connection, "conversation.item.retrieved"))[-1]
        assert base64.b64decode(retrieved["item"]["content"][0]["audio"]) == mulaw_silence(1_000)
        assert session.protocol_errors == []
        assert_valid_server_events(session)


async def test_one_response_at_a_time(server: FakeRealtimeServer) -> None:
    server.on("response.create", stream_audio(ms=1_000))
    connection = await raw_client(server)
    async with connection:
        await recv_until(connection, "session.created")
        await connection.send(json.dumps({"type": "response.create"}))
        created = (await recv_until(connection, "response.created"))[-1]
        await connection.send(json.dumps({"type": "response.create", "event_id": "second"}))
        error = (await recv_until(connection, "error"))[-1]
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert created["response"]["id"] in error["error"]["message"]
        assert error["error"]["event_id"] == "second"
        done = (await recv_until(connection, "response.done"))[-1]
        assert done["response"]["status"] == "completed"
        assert done["response"]["usage"]["output_token_details"]["audio_tokens"] > 0
        session = await server.wait_for_session()
        assert session.protocol_errors == []


async def test_function_call_script_and_its_output(server: FakeRealtimeServer) -> None:
    server.on("response.create", sequence(function_call("lookup_order", {"id": "A-42"}),
                                          stream_audio(ms=200, transcript="It shipped.")))
    connection = await raw_client(server)
    async with connection:
        await recv_until(connection, "session.created")
        await connection.send(json.dumps({"type": "response.create"}))
        events = await recv_until(connection, "response.done")
        arguments_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert json.loads(arguments_done["arguments"]) == {"id": "A-42"} == json.loads(deltas)
        assert arguments_done["name"] == "lookup_order"
        output_item = events[-1]["response"]["output"][0]
        assert output_item["type"] == "function_call" and output_item["call_id"] == arguments_done["call_id"]

        await connection.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_unknown", "output": "{}"}}))
        assert (await recv_until(connection, "error"))[-1]["error"]["param"] == "item.call_id"
        await connection.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": arguments_done["call_id"],
            "output": json.dumps({"status": "shipped"})}}))
        added = await recv_until(connection, "conversation.item.done")
        assert [e["type"] for e in added][-2:] == ["conversation.item.added", "conversation.item.done"]
        await connection.send(json.dumps({"type": "response.create"}))
        events = await recv_until(connection, "response.done")
        assert any(e["type"] == "response.output_audio.delta" for e in events)
        session = await server.wait_for_session()
        assert session.protocol_errors == []
        assert_valid_server_events(session)


async def test_energy_vad_hears_speech_and_answers() -> None:
    async with FakeRealtimeServer(energy_vad=True) as server:
        server.on("response.create", stream_audio(ms=200, transcript="Hello."))
        connection = await raw_client(server)
        async with connection:
            await recv_until(connection, "session.created")
            await connection.send(json.dumps({"type": "session.update", "session": PCMU_SESSION}))
            await recv_until(connection, "session.updated")
            audio = mulaw_silence(400) + synthesize_mulaw("Hi there, I need help.") + mulaw_silence(800)
            for start in range(0, len(audio), 160):
                await connection.send(json.dumps({"type": "input_audio_buffer.append",
                                                  "audio": base64.b64encode(audio[start : start + 160]).decode()}))
            events = await recv_until(connection, "response.done")
            types = [e["type"] for e in events]
            assert types.index("input_audio_buffer.speech_started") < types.index(
                "input_audio_buffer.speech_stopped") < types.index("input_audio_buffer.committed")
            started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
            assert 0 <= started["audio_start_ms"] <= 400
            assert events[-1]["response"]["status"] == "completed"


async def test_stall_drop_and_injected_errors(server: FakeRealtimeServer) -> None:
    connection = await raw_client(server)
    async with connection:
        await recv_until(connection, "session.created")
        session = await server.wait_for_session()
        session.stall(True)
        await connection.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        await session.wait_for_event("session.update")
        with pytest.raises(TimeoutError):
            await recv_until(connection, "session.updated", timeout_s=0.2)
        session.stall(False)
        await recv_until(connection, "session.updated")

        await session.send_error("session_expired", "Your session hit the maximum duration of 60 minutes.")
        error = (await recv_until(connection, "error"))[-1]
        assert error["error"] == {"type": "invalid_request_error", "code": "session_expired",
                                  "message": "Your session hit the maximum duration of 60 minutes.",
                                  "param": None, "event_id": None}
        await session.drop()
        with pytest.raises(ConnectionClosed):
            await connection.recv()
        assert connection.close_code == 1006

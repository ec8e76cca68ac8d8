"""The fake ElevenLabs server speaks the multi-context protocol (protocols.md §3.2), checked with a raw client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.fakes.elevenlabs_server import FakeElevenLabs, tts_tone_mulaw

API_KEY = "xi-test-key-0001"
PATH = "/v1/text-to-speech/voice1/multi-stream-input"
QUERY = "model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180&sync_alignment=true"
INIT = {"text": " ", "context_id": "c1",
        "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0},
        "generation_config": {"chunk_length_schedule": [120, 160, 250, 290]}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs(api_key=API_KEY, first_chunk_delay_s=0.0, next_chunk_delay_s=0.0) as server:
        yield server


def url(fake: FakeElevenLabs, query: str = QUERY, path: str = PATH) -> str:
    return f"ws://127.0.0.1:{fake.port}{path}?{query}"


async def send(client: ClientConnection, message: dict[str, Any]) -> None:
    await client.send(json.dumps(message))


async def receive(client: ClientConnection, timeout_s: float = 2.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = json.loads(await client.recv())
    return message


async def refused(fake: FakeElevenLabs, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as raised:
        async with connect(kwargs.pop("to", url(fake)), **kwargs):
            pass
    status: int = raised.value.response.status_code
    return status


async def test_upgrades_are_checked_like_the_real_service(fake: FakeElevenLabs) -> None:
    assert await refused(fake) == 401
    assert await refused(fake, additional_headers={"xi-api-key": "wrong"}) == 401
    key = {"xi-api-key": API_KEY}
    assert await refused(fake, additional_headers=key, to=url(fake, QUERY.replace("ulaw_8000", "mp3_44100"))) == 400
    assert await refused(fake, additional_headers=key, to=url(fake, "output_format=ulaw_8000")) == 400
    assert await refused(fake, additional_headers=key, to=url(fake, path="/v1/text-to-speech/voice1")) == 404
    fake.refuse_with(503)
    assert await refused(fake, additional_headers=key) == 503
    assert [status for status, _ in fake.rejected_upgrades] == [401, 401, 400, 400, 404, 503]
    assert fake.connections == []


async def test_audio_follows_the_chunk_schedule(fake: FakeElevenLabs) -> None:
    async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
        await send(client, INIT)
        for _ in range(90):  # 900 characters, ten at a time
            await send(client, {"text": "abcdefghi ", "context_id": "c1"})
        await send(client, {"context_id": "c1", "flush": True})
        messages = [await receive(client)]
        while not messages[-1].get("isFinal"):
            messages.append(await receive(client))
    audio = [m for m in messages if "audio" in m]
    assert [len(m["alignment"]["chars"]) for m in audio] == [120, 160, 250, 290, 80]
    assert all(m["contextId"] == "c1" and m["normalizedAlignment"] == m["alignment"] for m in audio)
    assert messages[-1] == {"isFinal": True, "contextId": "c1"}
    for message in audio:
        chars = len(message["alignment"]["chars"])
        assert base64.b64decode(message["audio"]) == tts_tone_mulaw(chars * 67)
        assert message["alignment"]["charStartTimesMs"][-1] == (chars - 1) * 67
    context = fake.connections[0].contexts["c1"]
    assert context.spoken_text == context.text == "abcdefghi " * 90
    assert context.flushes == 1 and context.finals_sent == 1


async def test_without_sync_alignment_audio_comes_alone(fake: FakeElevenLabs) -> None:
    query = QUERY.replace("&sync_alignment=true", "")
    async with connect(url(fake, query), additional_headers={"xi-api-key": API_KEY}) as client:
        await send(client, INIT)
        await send(client, {"text": "Hi. ", "context_id": "c1", "flush": True})
        message = await receive(client)
    assert set(message) == {"audio", "contextId"}
    assert len(base64.b64decode(message["audio"])) == 4 * 67 * 8


async def test_close_socket_lets_a_flushing_context_finish_and_stops_the_others(fake: FakeElevenLabs) -> None:
    async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
        server_side = await fake.wait_for_connection()
        server_side.stall()
        await send(client, INIT)
        await send(client, {**INIT, "context_id": "c2"})
        await send(client, {"text": "Flushed answer. ", "context_id": "c1", "flush": True})
        await send(client, {"text": "x" * 130 + " ", "context_id": "c2"})  # released, not flushed
        await send(client, {"close_socket": True})
        await server_side.wait_for_message(lambda m: m.get("close_socket") is True)
        server_side.stall(False)
        messages = [json.loads(m) async for m in client]
        assert client.close_code == 1000
    assert [m.get("contextId") for m in messages] == ["c1", "c1"]
    assert messages[-1]["isFinal"] is True
    assert server_side.contexts["c2"].audio_ms_sent == 0


async def test_close_context_can_be_told_to_finish_a_flush() -> None:
    async with FakeElevenLabs(api_key=API_KEY, close_context_finishes_flush=True, first_chunk_delay_s=0.0) as fake:
        async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
            server_side = await fake.wait_for_connection()
            server_side.stall()
            await send(client, INIT)
            await send(client, {"text": "Already flushed. ", "context_id": "c1", "flush": True})
            await send(client, {"context_id": "c1", "close_context": True})
            await send(client, {"text": "Too late. ", "context_id": "c1"})
            await server_side.wait_for_message(lambda m: m.get("text") == "Too late. ")
            server_side.stall(False)
            assert "audio" in await receive(client)
            assert (await receive(client))["isFinal"] is True
        context = server_side.contexts["c1"]
    assert context.is_closed and context.spoken_text == "Already flushed. "
    assert context.late_messages == [{"text": "Too late. ", "context_id": "c1"}]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"text": "Hello ", "context_id": "c1"}], "invalid_request"),  # not initialised
        ([{**INIT, "extra": 1}], "invalid_request"),
        ([{"text": " "}], "invalid_request"),  # no context_id
        ([{**INIT, "voice_settings": {"speed": 2.0}}], "invalid_request"),
        ([{**INIT, "generation_config": {"chunk_length_schedule": [10]}}], "invalid_request"),
        ([INIT, {"text": "Hi ", "context_id": "c1", "voice_settings": {"speed": 0.8}}], "invalid_request"),
        ([{**INIT, "context_id": f"c{n}"} for n in range(6)], "max_active_conversations"),
    ],
)
async def test_protocol_violations_get_an_error_then_a_close(fake: FakeElevenLabs, messages: list[dict[str, Any]],
                                                             error: str) -> None:
    async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
        for message in messages:
            await send(client, message)
        reply = await receive(client)
        with pytest.raises(ConnectionClosed):
            await receive(client)
    assert reply["error"] == error and reply["code"] == 1008 and reply["message"]
    assert client.close_code == 1008
    assert fake.connections[0].protocol_errors == [error]


async def test_a_closed_context_frees_its_slot(fake: FakeElevenLabs) -> None:
    async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
        for n in range(12):
            await send(client, {**INIT, "context_id": f"c{n}"})
            await send(client, {"context_id": f"c{n}", "close_context": True})
        await send(client, {"close_socket": True})
        assert [m async for m in client] == []
    server_side = fake.connections[0]
    assert server_side.protocol_errors == [] and server_side.open_context_ids == []
    assert len(server_side.contexts) == 12


async def test_a_stalled_server_holds_audio_until_released(fake: FakeElevenLabs) -> None:
    fake.stall()
    async with connect(url(fake), additional_headers={"xi-api-key": API_KEY}) as client:
        await send(client, INIT)
        await send(client, {"text": "Hello. ", "context_id": "c1", "flush": True})
        server_side = await fake.wait_for_connection()
        await server_side.wait_for_message(lambda m: m.get("flush") is True)
        with pytest.raises(TimeoutError):
            await receive(client, timeout_s=0.1)
        fake.stall(False)
        assert "audio" in await receive(client)
        assert (await receive(client))["isFinal"] is True

"""ElevenLabsConnection against the fake ElevenLabs server: chunk schedule, alignment, barge-in, failures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from switchboard.bridge.adapters.elevenlabs_connection import ElevenLabsConnection
from switchboard.bridge.wire.elevenlabs_tts import (
    TtsAudio,
    TtsContextFinal,
    TtsError,
    TtsEvent,
    encode_close_context,
    encode_close_socket,
    encode_flush,
    encode_init_context,
    encode_keep_alive,
    encode_text,
)
from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from switchboard.fakes.elevenlabs_server import FakeElevenLabs, FakeTtsConnection, tts_tone_mulaw

API_KEY = "xi-secret-key-1234"
VOICE_ID = "21m00Tcm4TlvDq8ikWAM"
MODEL_ID = "eleven_flash_v2_5"
# 25 characters per sentence (with the space encode_text adds).
SENTENCE = "The order ships tomorrow."


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs(api_key=API_KEY, first_chunk_delay_s=0.0, next_chunk_delay_s=0.0) as server:
        yield server


async def open_connection(fake: FakeElevenLabs) -> ElevenLabsConnection:
    return await ElevenLabsConnection.open(fake.base_url, API_KEY, VOICE_ID, MODEL_ID, connect_timeout_s=2.0)


class Collected:
    """Everything `events()` yielded, in order, with a way to wait for the next ones."""

    def __init__(self) -> None:
        self.events: list[TtsEvent] = []
        self._changed = asyncio.Condition()

    async def collect(self, connection: ElevenLabsConnection) -> None:
        async for event in connection.events():
            self.events.append(event)
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, count: int, timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.events) >= count)


async def received_count(server_side: FakeTtsConnection, count: int) -> None:
    await server_side.wait_for_message(lambda m: True, after_index=count - 1)


async def test_first_audio_comes_after_120_characters_with_its_alignment(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    collected = Collected()
    events = collected.events
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(collected.collect(connection), name="tts-reader")
        server_side = await fake.wait_for_connection()
        connection.send_nowait(encode_init_context("c1"))
        for _ in range(4):  # 104 characters: under the first threshold
            connection.send_nowait(encode_text("c1", SENTENCE))
        await received_count(server_side, 5)
        assert events == [] and server_side.contexts["c1"].spoken_chunks == []
        assert len(server_side.contexts["c1"].pending_text) == 104

        connection.send_nowait(encode_text("c1", SENTENCE))  # 130 characters: the first chunk goes
        await collected.wait_for(1)
        first = events[0]
        assert isinstance(first, TtsAudio) and first.context_id == "c1"
        assert first.alignment is not None
        assert "".join(first.alignment.chars) == (SENTENCE + " ") * 5
        ms_per_char = 67  # 15 characters per second
        assert first.alignment.start_ms[:3] == (0, ms_per_char, 2 * ms_per_char)
        assert set(first.alignment.duration_ms) == {ms_per_char}
        mulaw = base64.b64decode(first.payload)
        assert mulaw == tts_tone_mulaw(130 * ms_per_char)
        assert len(mulaw) == 8 * (first.alignment.start_ms[-1] + first.alignment.duration_ms[-1])

        connection.send_nowait(encode_text("c1", "Anything else?"))
        connection.send_nowait(encode_flush("c1"))
        await collected.wait_for(3)
        assert isinstance(events[1], TtsAudio) and events[1].alignment is not None
        assert "".join(events[1].alignment.chars) == "Anything else? "
        assert events[2] == TtsContextFinal("c1")

        connection.send_nowait(encode_close_socket())
    assert connection.close_code == 1000
    assert server_side.protocol_errors == []
    assert server_side.text_of("c1") == (SENTENCE + " ") * 5 + "Anything else? "
    assert server_side.request_headers["xi-api-key"] == API_KEY
    assert server_side.voice_id == VOICE_ID and server_side.model_id == MODEL_ID
    assert server_side.query["output_format"] == "ulaw_8000"


async def test_close_context_stops_its_audio_while_another_context_speaks(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    collected = Collected()
    events = collected.events
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(collected.collect(connection), name="tts-reader")
        server_side = await fake.wait_for_connection()
        server_side.stall()  # audio for c1 is generated but held back, as if still on its way
        connection.send_nowait(encode_init_context("c1"))
        for _ in range(5):
            connection.send_nowait(encode_text("c1", SENTENCE))
        connection.send_nowait(encode_flush("c1"))
        # Barge-in: close c1, then start the next answer in c2.
        connection.send_nowait(encode_close_context("c1"))
        connection.send_nowait(encode_init_context("c2"))
        connection.send_nowait(encode_text("c2", "Sorry, go ahead."))
        connection.send_nowait(encode_keep_alive("c2"))
        await received_count(server_side, 11)
        server_side.stall(False)
        connection.send_nowait(encode_flush("c2"))
        await collected.wait_for(2)
        connection.send_nowait(encode_close_socket())
    assert [type(e) for e in events] == [TtsAudio, TtsContextFinal]
    assert all(getattr(e, "context_id", None) == "c2" for e in events)
    assert server_side.contexts["c1"].is_closed and server_side.contexts["c1"].audio_ms_sent == 0
    assert server_side.contexts["c2"].keep_alives == 1
    assert server_side.protocol_errors == []


async def test_a_dropped_socket_ends_the_events(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    collected = Collected()
    events = collected.events
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(collected.collect(connection), name="tts-reader")
        server_side = await fake.wait_for_connection()
        connection.send_nowait(encode_init_context("c1"))
        await received_count(server_side, 1)
        await server_side.drop()
    assert events == [] and connection.close_code == 1006
    connection.send_nowait(encode_text("c1", "Nobody is listening."))  # queued, never sent: no error


async def test_an_elevenlabs_error_is_an_event_then_the_socket_closes(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    collected = Collected()
    events = collected.events
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(collected.collect(connection), name="tts-reader")
        server_side = await fake.wait_for_connection()
        await server_side.fail("Quota exceeded.", "quota_exceeded", code=1008)
    assert events == [TtsError("Quota exceeded.")]
    assert connection.close_code == 1008


async def test_a_sixth_open_context_is_refused_as_elevenlabs_does(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    collected = Collected()
    events = collected.events
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(collected.collect(connection), name="tts-reader")
        for index in range(6):
            connection.send_nowait(encode_init_context(f"c{index}"))
    assert len(events) == 1 and isinstance(events[0], TtsError)
    assert "Maximum simultaneous contexts" in events[0].message
    assert connection.close_code == 1008


async def test_a_malformed_frame_is_a_protocol_error(fake: FakeElevenLabs) -> None:
    connection = await open_connection(fake)
    server_side = await fake.wait_for_connection()
    await server_side.send_raw('{"audio": "not base64!", "contextId": "c1"}')
    with pytest.raises(UpstreamProtocolError) as raised:
        async for _ in connection.events():
            pass
    assert raised.value.service == "elevenlabs" and not raised.value.retryable
    await connection.close()


async def test_a_full_send_queue_is_a_protocol_error(fake: FakeElevenLabs) -> None:
    connection = await ElevenLabsConnection.open(fake.base_url, API_KEY, VOICE_ID, MODEL_ID,
                                                 connect_timeout_s=2.0, queue_size=2)
    connection.send_nowait(encode_init_context("c1"))
    connection.send_nowait(encode_keep_alive("c1"))
    with pytest.raises(UpstreamProtocolError):
        connection.send_nowait(encode_keep_alive("c1"))
    await connection.close()
    await connection.run_writer()  # the socket is closed: the writer returns at once


async def test_a_wrong_key_is_refused_and_not_retryable(fake: FakeElevenLabs) -> None:
    with pytest.raises(UpstreamUnavailable) as raised:
        await ElevenLabsConnection.open(fake.base_url, "xi-wrong-key-9876", VOICE_ID, MODEL_ID,
                                        connect_timeout_s=2.0)
    assert not raised.value.retryable
    assert "401" in str(raised.value) and "9876" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert fake.rejected_upgrades == [(401, "invalid_api_key")]


async def test_a_5xx_refusal_is_retryable(fake: FakeElevenLabs) -> None:
    fake.refuse_with(503)
    with pytest.raises(UpstreamUnavailable) as raised:
        await open_connection(fake)
    assert raised.value.retryable and "503" in str(raised.value)
    fake.refuse_with(None)
    connection = await open_connection(fake)
    await connection.close()


async def test_nothing_listening_is_unavailable() -> None:
    async with FakeElevenLabs(api_key=API_KEY) as server:
        base_url = server.base_url
    with pytest.raises(UpstreamUnavailable) as raised:
        await ElevenLabsConnection.open(base_url, API_KEY, VOICE_ID, MODEL_ID, connect_timeout_s=2.0)
    assert raised.value.retryable


async def test_an_upgrade_that_never_answers_times_out() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamTimeout) as raised:
            await ElevenLabsConnection.open(f"http://127.0.0.1:{port}", API_KEY, VOICE_ID, MODEL_ID,
                                            connect_timeout_s=0.1)
        assert raised.value.retryable
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

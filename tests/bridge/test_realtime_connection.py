"""The model connection (picows) against real WebSocket servers on 127.0.0.1: what each side received."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Response

from switchboard.bridge.adapters.realtime_connection import RealtimeConnection
from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def ws_server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


async def open_connection(url: str, **kwargs: Any) -> RealtimeConnection:
    return await RealtimeConnection.open(url, model="gpt-realtime", api_key="sk-test", connect_timeout_s=2.0, **kwargs)


async def read_all(connection: RealtimeConnection) -> list[str | bytes]:
    messages: list[str | bytes] = []
    async with asyncio.timeout(5):
        await connection.run_reader(messages.append)
    return messages


async def test_messages_arrive_in_order_fragmented_and_binary_included_and_the_request_is_authorised() -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["path"] = ws.request.path
        seen["authorization"] = ws.request.headers.get("Authorization")
        await ws.send('{"type":"session.created"}')  # before the client has a reader
        seen["first"] = await ws.recv()
        await ws.send(iter(['{"type":"response.output_audio.delta",', '"delta":"AAAA"}']))  # fragmented
        await ws.send(b"\x00\x01")
        await ws.send('{"type":"response.done"}')
        await ws.close()

    async with ws_server(handler) as url:
        connection = await open_connection(url)
        await asyncio.sleep(0.05)  # the server's first message is in before anyone reads
        connection.send_nowait('{"type":"session.update"}')
        messages = await read_all(connection)
    assert messages == ['{"type":"session.created"}', '{"type":"response.output_audio.delta","delta":"AAAA"}',
                        b"\x00\x01", '{"type":"response.done"}']
    assert seen == {"path": "/v1/realtime?model=gpt-realtime", "authorization": "Bearer sk-test",
                    "first": '{"type":"session.update"}'}
    assert connection.closed


async def test_a_handler_exception_closes_the_socket_and_is_raised_by_the_reader() -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send("boom")
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        closed.set()

    def explode(message: str | bytes) -> None:
        raise ValueError(f"cannot handle {message!r}")

    async with ws_server(handler) as url:
        connection = await open_connection(url)
        with pytest.raises(ValueError, match="boom"):
            async with asyncio.timeout(5):
                await connection.run_reader(explode)
        async with asyncio.timeout(5):
            await closed.wait()


async def test_close_sends_a_normal_close_frame() -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            await ws.recv()
        codes.append(ws.close_code)

    async with ws_server(handler) as url:
        connection = await open_connection(url)
        reader = asyncio.ensure_future(read_all(connection))
        async with asyncio.timeout(5):
            await connection.close()
            assert await reader == []
    assert codes == [1000]


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (403, False), (503, True)])
async def test_a_refused_upgrade_is_unavailable_and_retryable_only_for_server_errors(status: int, retryable: bool) -> None:
    def refuse(connection: ServerConnection, request: Any) -> Response:
        return connection.respond(status, "no\n")

    async def handler(ws: ServerConnection) -> None:  # pragma: no cover - never upgraded
        await ws.close()

    async with ws_server(handler, process_request=refuse) as url:
        with pytest.raises(UpstreamUnavailable) as caught:
            await open_connection(url)
    assert caught.value.retryable is retryable
    assert str(status) in str(caught.value)


async def test_a_server_that_never_answers_the_upgrade_times_out_and_a_closed_port_is_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # never answers; ends when the client gives up and closes
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(UpstreamTimeout):
            await RealtimeConnection.open(f"ws://127.0.0.1:{port}/v1/realtime", model="m", api_key=None,
                                          connect_timeout_s=0.3)
    with pytest.raises(UpstreamUnavailable) as caught:
        await RealtimeConnection.open(f"ws://127.0.0.1:{port}/v1/realtime", model="m", api_key=None,
                                      connect_timeout_s=1.0)
    assert caught.value.retryable


async def test_a_model_that_stops_reading_fails_the_send_instead_of_buffering_without_bound() -> None:
    """A raw server completes the upgrade, then never reads again: sends must fail once the buffer bound is hit."""
    upgraded = asyncio.Event()
    finished = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        upgraded.set()
        await finished.wait()
        writer.close()

    server = await asyncio.start_server(stalled, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        connection = await RealtimeConnection.open(f"ws://127.0.0.1:{port}/v1/realtime", model="m", api_key=None,
                                                   connect_timeout_s=2.0, max_unsent_bytes=256 << 10)
        await upgraded.wait()
        chunk = '{"type":"input_audio_buffer.append","audio":"' + "A" * (256 << 10) + '"}'
        with pytest.raises(UpstreamProtocolError, match="not reading"):
            for _ in range(400):  # at most ~100 MB: the kernel's buffers fill long before
                connection.send_nowait(chunk)
                await asyncio.sleep(0)
        finished.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await connection.close()

"""TwilioStream under uvicorn: the direct text channel (our protocol) and plain ASGI behave the same on the wire."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from switchboard.bridge.adapters.twilio_stream import TwilioStream
from switchboard.errors import CallerGone
from switchboard.fakes.loopback import LoopbackServer

PROTOCOLS = pytest.mark.parametrize("ws", [None, "websockets-sansio"], ids=["direct", "asgi"])
Session = Callable[[TwilioStream], Awaitable[None]]


@contextlib.asynccontextmanager
async def stream_server(session: Session, ws: str | None, **stream_kwargs: Any) -> AsyncIterator[tuple[str, dict]]:
    """Serve /s: accept, wrap in TwilioStream, run `session`; yields (url, outcome)."""
    outcome: dict[str, Any] = {}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        stream = TwilioStream(websocket, **stream_kwargs)
        outcome["direct"] = stream.direct
        try:
            await session(stream)
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            outcome["error"] = exc
        finally:
            with contextlib.suppress(TimeoutError):  # as the call does: a stalled peer gets a bounded close
                async with asyncio.timeout(1):
                    await stream.close()
            outcome["done"] = True

    app = Starlette(routes=[WebSocketRoute("/s", endpoint)])
    extra = {} if ws is None else {"ws": ws}
    async with LoopbackServer(app, **extra) as server:
        yield f"ws://127.0.0.1:{server.port}/s", outcome


@PROTOCOLS
async def test_frames_sent_before_and_after_the_reader_starts_arrive_once_in_order(ws: str | None) -> None:
    received: list[str] = []
    reader_started = asyncio.Event()

    async def session(stream: TwilioStream) -> None:
        await asyncio.sleep(0.2)  # the first frames wait in the ASGI queue meanwhile
        reader_started.set()
        await stream.run_reader(received.append)

    async with stream_server(session, ws) as (url, outcome), connect(url) as client:
        for i in range(5):
            await client.send(f"early-{i}")
        await reader_started.wait()
        for i in range(5):
            await client.send(f"late-{i}")
        await client.send(b"binary")
        await client.send("x" * 70_000)  # over max_frame_bytes
        await client.send("last")
        await asyncio.sleep(0.2)
    async with asyncio.timeout(5):
        while not outcome.get("done"):  # noqa: ASYNC110 - waiting for the server side to finish
            await asyncio.sleep(0.01)
    assert outcome["direct"] is (ws is None)
    assert received == [f"early-{i}" for i in range(5)] + [f"late-{i}" for i in range(5)] + ["last"]
    assert "error" not in outcome


@PROTOCOLS
async def test_a_handler_exception_ends_the_reader_with_that_exception(ws: str | None) -> None:
    def handle(text: str) -> None:
        if text == "bad":
            raise ValueError("bad frame handler")

    async def session(stream: TwilioStream) -> None:
        await stream.run_reader(handle)

    async with stream_server(session, ws) as (url, outcome), connect(url) as client:
        await client.send("fine")
        await client.send("bad")
        async with asyncio.timeout(5):
            while not outcome.get("done"):  # noqa: ASYNC110 - waiting for the server side to finish
                await asyncio.sleep(0.01)
    assert isinstance(outcome.get("error"), ValueError)


@PROTOCOLS
async def test_messages_reach_the_client_in_order(ws: str | None) -> None:
    async def session(stream: TwilioStream) -> None:
        writer = asyncio.ensure_future(stream.run_writer())
        for i in range(200):
            stream.send_nowait(f'{{"event":"media","n":{i}}}')
        await stream.wait_until_sent(5)
        await stream.run_reader(lambda text: None)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    async with stream_server(session, ws) as (url, outcome), connect(url) as client:
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(200)]
    assert got == [f'{{"event":"media","n":{i}}}' for i in range(200)]


@PROTOCOLS
async def test_a_caller_that_stops_reading_fails_the_send_instead_of_buffering_without_bound(ws: str | None) -> None:
    async def session(stream: TwilioStream) -> None:
        writer = asyncio.ensure_future(stream.run_writer())
        try:
            payload = "A" * 60_000
            for _ in range(2_000):  # at most ~120 MB; the bound is hit long before
                stream.send_nowait(payload)
                await asyncio.sleep(0)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, CallerGone):
                await writer

    async with stream_server(session, ws, queue_size=64, max_unsent_bytes=256 << 10) as (url, outcome):
        port = int(url.split(":")[2].split("/")[0])
        # A raw client with a small receive buffer that upgrades and then never reads.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        await loop.sock_sendall(sock, b"GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                      b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                                      b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        try:
            async with asyncio.timeout(10):
                while not outcome.get("done"):  # noqa: ASYNC110 - waiting for the server side to finish
                    await asyncio.sleep(0.01)
        finally:
            sock.close()
    assert isinstance(outcome.get("error"), CallerGone)

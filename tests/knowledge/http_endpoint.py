"""A real HTTP/1.1 endpoint on 127.0.0.1 for tool tests: records each request and answers as told."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class ToolEndpoint:
    port: int = 0
    status_code: int = 200
    body: bytes = b'{"status": "shipped", "eta": "Friday"}'
    delay_s: float = 0.0
    received: list[ReceivedRequest] = field(default_factory=list)
    # Set when the endpoint shuts down: a handler still "being slow" answers at once and ends.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            split = urlsplit(target)
            self.received.append(ReceivedRequest(method, split.path, dict(parse_qsl(split.query)), headers, body))
            if self.delay_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), timeout=self.delay_s)
            writer.write(
                f"HTTP/1.1 {self.status_code} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode() + self.body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (a tool timeout); nothing to answer
        finally:
            writer.close()
            self.handlers.discard(task)


@asynccontextmanager
async def serving(endpoint: ToolEndpoint) -> AsyncIterator[ToolEndpoint]:
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    endpoint.port = server.sockets[0].getsockname()[1]
    try:
        yield endpoint
    finally:
        server.close()
        endpoint.closing.set()
        if endpoint.handlers:
            await asyncio.wait(list(endpoint.handlers), timeout=5)
        await server.wait_closed()

"""Twilio's Media Stream WebSocket (server side, Starlette): one reader, one writer fed by a queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard.errors import CallerGone


class TwilioStream:
    def __init__(self, websocket: WebSocket, *, queue_size: int = 4096, max_frame_bytes: int = 65536) -> None:
        self._websocket = websocket
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.max_frame_bytes = max_frame_bytes
        self.oversized_frames = 0
        self.binary_frames = 0

    def send_nowait(self, text: str) -> None:
        """Queue one message to Twilio. Raises CallerGone if Twilio stopped reading (queue full)."""
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            raise CallerGone("twilio send queue full") from None

    async def run_writer(self) -> None:
        try:
            while True:
                text = await self._outbox.get()
                await self._websocket.send_text(text)
                self._outbox.task_done()
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise CallerGone("socket closed while sending") from None

    async def receive_text(self) -> str | None:
        """The next usable text frame; None when the socket closed. Oversized/binary frames are counted and skipped."""
        while True:
            try:
                message = await self._websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return None
            if message["type"] == "websocket.disconnect":
                return None
            text: str | None = message.get("text")
            if text is None:
                self.binary_frames += 1
                continue
            if len(text) > self.max_frame_bytes:
                self.oversized_frames += 1
                continue
            return text

    async def frames(self) -> AsyncIterator[str]:
        while (text := await self.receive_text()) is not None:
            yield text

    async def wait_until_sent(self, timeout_s: float) -> None:
        """Wait (bounded) for queued messages to be written, e.g. a goodbye before closing."""
        async with asyncio.timeout(timeout_s):
            await self._outbox.join()

    async def close(self, code: int = 1000) -> None:
        if self._websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await self._websocket.close(code=code)

"""Twilio's Media Stream WebSocket (server side).

Two modes, the same behaviour. Under our uvicorn protocol (`direct_ws`) text frames reach the call
synchronously and messages are written synchronously: no queue and no task wake-up per frame. Under
any other ASGI server it is plain Starlette: one reader, and one writer fed by a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard.bridge.adapters.direct_ws import EXTENSION, DirectTextChannel
from switchboard.errors import CallerGone

# About 4 000 media messages: Twilio has stopped reading long before this fills.
MAX_UNSENT_BYTES = 1 << 20


class TwilioStream:
    def __init__(self, websocket: WebSocket, *, queue_size: int = 4096, max_frame_bytes: int = 65536,
                 max_unsent_bytes: int = MAX_UNSENT_BYTES) -> None:
        self._websocket = websocket
        extensions = websocket.scope.get("extensions") or {}
        self._direct: DirectTextChannel | None = extensions.get(EXTENSION)
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.max_frame_bytes = max_frame_bytes
        self.max_unsent_bytes = max_unsent_bytes
        self.oversized_frames = 0
        self.binary_frames = 0

    @property
    def direct(self) -> bool:
        return self._direct is not None

    # ------------------------------------------------------------------ sending
    def send_nowait(self, text: str) -> None:
        """Send (or queue) one message to Twilio. Raises CallerGone if Twilio stopped reading."""
        direct = self._direct
        if direct is not None:
            if direct.write_buffer_size() > self.max_unsent_bytes:
                raise CallerGone("twilio is not reading; send buffer full")
            direct.send_text(text)  # False once closing: the reader reports the hang-up
            return
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            raise CallerGone("twilio send queue full") from None

    async def run_writer(self) -> None:
        """The queue's writer (plain ASGI only; in direct mode messages are already written)."""
        if self._direct is not None:
            return
        try:
            while True:
                text = await self._outbox.get()
                await self._websocket.send_text(text)
                self._outbox.task_done()
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise CallerGone("socket closed while sending") from None

    async def wait_until_sent(self, timeout_s: float) -> None:
        """Wait (bounded) for queued messages to be written, e.g. a goodbye before closing.

        In direct mode they already are (in the socket's buffer, which a close flushes first)."""
        if self._direct is not None:
            return
        async with asyncio.timeout(timeout_s):
            await self._outbox.join()

    # ------------------------------------------------------------------ receiving
    def _usable(self, text: str | None) -> bool:
        if text is None:
            self.binary_frames += 1
            return False
        if len(text) > self.max_frame_bytes:
            self.oversized_frames += 1
            return False
        return True

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
            if self._usable(text):
                return text

    async def frames(self) -> AsyncIterator[str]:
        while (text := await self.receive_text()) is not None:
            yield text

    async def run_reader(self, on_text: Callable[[str], None]) -> None:
        """Hand every usable text frame to `on_text`, in order, until the socket closes.

        In direct mode `on_text` runs synchronously as each frame arrives (in this task's contextvars
        context); an exception it raises closes nothing by itself but ends this reader and is re-raised.
        """
        direct = self._direct
        if direct is None:
            async for text in self.frames():
                on_text(text)
            return
        # Frames that arrived before the receiver was set wait in the ASGI queue: take them first, in order.
        while direct.queued():
            early = await self.receive_text()
            if early is None:
                return
            on_text(early)

        def deliver(text: str) -> None:
            if len(text) > self.max_frame_bytes:
                self.oversized_frames += 1
                return
            on_text(text)

        direct.set_receiver(deliver)
        try:
            # Only what the direct channel does not carry comes this way: binary frames and the disconnect.
            while (other := await self.receive_text()) is not None:
                on_text(other)
        finally:
            direct.clear_receiver()
        if direct.failure is not None:
            raise direct.failure

    async def close(self, code: int = 1000) -> None:
        """Close (once); a caller that already went away is not an error. In direct mode the call may end on
        `stop` before the reader has seen the disconnect, so Starlette still thinks the socket is open."""
        if self._websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self._websocket.close(code=code)

"""The model's WebSocket (OpenAI Realtime GA, or the local engine speaking the same protocol).

Connect with a timeout, one reader (an async iterator of raw frames) and one writer fed by a
bounded queue. websockets exceptions become UpstreamError here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

SERVICE = "realtime"


def realtime_url_with_model(url: str, model: str) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode({"model": model})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class RealtimeConnection:
    """One model session. Use `await RealtimeConnection.open(...)`, then `events()` and `send_nowait()`."""

    def __init__(self, websocket: ClientConnection, *, queue_size: int) -> None:
        self._websocket = websocket
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)

    @classmethod
    async def open(
        cls, url: str, *, model: str, api_key: str | None, connect_timeout_s: float, queue_size: int = 4096
    ) -> RealtimeConnection:
        """Raises: UpstreamTimeout, UpstreamUnavailable (retryable unless the server refused us)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            websocket = await connect(
                realtime_url_with_model(url, model),
                additional_headers=headers,
                open_timeout=connect_timeout_s,
                close_timeout=2.0,
                max_size=None,  # audio deltas may be large; the peer is trusted (and authenticated)
                compression=None,
                ping_interval=20.0,
                ping_timeout=20.0,
            )
        except TimeoutError:
            raise UpstreamTimeout(SERVICE, "connect timed out", retryable=True) from None
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise UpstreamUnavailable(SERVICE, f"upgrade refused with {status}", retryable=status >= 500) from None
        except (OSError, websockets.InvalidHandshake):
            raise UpstreamUnavailable(SERVICE, "connect failed", retryable=True) from None
        return cls(websocket, queue_size=queue_size)

    def send_nowait(self, text: str) -> None:
        """Queue one client event for the writer.

        Raises:
            UpstreamProtocolError: the model has stopped reading (queue full); the call should end.
        """
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            raise UpstreamProtocolError(SERVICE, "model is not reading; send queue full", retryable=False) from None

    async def run_writer(self) -> None:
        """Send queued events until the socket closes; the reader reports the close to the call."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                text = await self._outbox.get()
                await self._websocket.send(text)

    async def events(self) -> AsyncIterator[str | bytes]:
        """Raw frames until the socket closes (normally or not)."""
        try:
            async for message in self._websocket:
                yield message
        except websockets.ConnectionClosedError:
            return

    async def close(self) -> None:
        await self._websocket.close()

"""The ElevenLabs multi-context TTS WebSocket for one call.

Connect with a timeout, one reader (parsed events) and one writer fed by a bounded queue; it decides
nothing about the call. websockets and OS exceptions become UpstreamError here, without the URL or key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import websockets
from websockets.asyncio.client import ClientConnection, connect

from switchboard.bridge.wire.elevenlabs_tts import TtsEvent, TtsProtocolError, parse_tts_message, tts_url
from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

SERVICE = "elevenlabs"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""A 290-character chunk is ~20 s of μ-law (~210 KB as base64, plus alignment); anything near this is wrong."""


class ElevenLabsConnection:
    """One TTS socket. Use `await ElevenLabsConnection.open(...)`, then `events()`, `send_nowait()`, `close()`.

    Run `run_writer()` and iterate `events()` in tasks of the call's TaskGroup.
    """

    def __init__(self, websocket: ClientConnection, *, queue_size: int) -> None:
        self._websocket = websocket
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)

    @classmethod
    async def open(
        cls, base_url: str, api_key: str, voice_id: str, model_id: str, *, connect_timeout_s: float,
        close_timeout_s: float = 2.0, queue_size: int = 1024,
    ) -> ElevenLabsConnection:
        """Connect to `multi-stream-input` for `voice_id` (μ-law 8 kHz out, alignment on, 180 s inactivity).

        Raises:
            UpstreamTimeout: no upgrade within `connect_timeout_s` (retryable).
            UpstreamUnavailable: refused (retryable only for 5xx) or unreachable (retryable).
        """
        try:
            websocket = await connect(
                tts_url(base_url, voice_id, model_id),
                additional_headers={"xi-api-key": api_key},
                open_timeout=connect_timeout_s,
                close_timeout=close_timeout_s,
                max_size=MAX_MESSAGE_BYTES,
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

    @property
    def close_code(self) -> int | None:
        """The close code once the socket has closed (1006: dropped without a close frame), else None."""
        return self._websocket.close_code

    def send_nowait(self, text: str) -> None:
        """Queue one message (from `wire.elevenlabs_tts.encode_*`) for the writer; never waits.

        Raises:
            UpstreamProtocolError: ElevenLabs has stopped reading (queue full).
        """
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            raise UpstreamProtocolError(SERVICE, "not reading; send queue full", retryable=False) from None

    async def run_writer(self) -> None:
        """Send queued messages in order until the socket closes; `events()` reports the close.

        Returns once `events()` has ended or `close()` was called.
        """
        with contextlib.suppress(websockets.ConnectionClosed):
            while (text := await self._outbox.get()) is not None:
                await self._websocket.send(text)

    async def events(self) -> AsyncIterator[TtsEvent]:
        """Parsed server messages until the socket closes, cleanly or not (see `close_code`).

        Frames carrying nothing (empty audio) are skipped. A `TtsError` is usually followed by the close.

        Raises:
            UpstreamProtocolError: a frame we cannot parse (not retryable).
        """
        try:
            async for message in self._websocket:
                try:
                    event = parse_tts_message(message)
                except TtsProtocolError as exc:
                    raise UpstreamProtocolError(SERVICE, exc.kind, retryable=False) from None
                if event is not None:
                    yield event
        except websockets.ConnectionClosedError:
            return
        finally:
            self._stop_writer()

    async def close(self) -> None:
        """Close the socket (bounded by `close_timeout_s`); queued messages are dropped."""
        self._stop_writer()
        await self._websocket.close()

    def _stop_writer(self) -> None:
        # When the queue is full the writer is not waiting on it; its next send fails on the closed socket.
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)

"""The model's WebSocket (OpenAI Realtime GA, or the local engine speaking the same protocol).

Built on picows rather than the `websockets` asyncio client: at 50 audio deltas a second per call the
client's reader task, message assembler and writer queue measured about a fifth of a loaded voice
server's CPU (docs/benchmarks.md). Here a message is handed to the call synchronously, in the
socket's `data_received`, and a client event is written synchronously; there is no task per
direction. Fragmented messages are reassembled; the server's close is answered; idle pings detect a
dead peer. picows exceptions become UpstreamError here.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSInvalidStatusError

from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

SERVICE = "realtime"
MAX_MESSAGE_BYTES = 16 << 20
# A healthy model socket drains in microseconds; this much unsent data means the model stopped reading.
MAX_UNSENT_BYTES = 4 << 20
PING_IDLE_S = 20.0

MessageHandler = Callable[[str | bytes], None]


def realtime_url_with_model(url: str, model: str) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode({"model": model})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _Listener(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.connection: RealtimeConnection | None = None
        self.early: list[str | bytes] = []
        self.disconnected = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        connection = self.connection
        if connection is not None:
            connection._on_frame(transport, frame)
            return
        # Before open() returned (a server may speak first): keep complete messages in order.
        if frame.msg_type == WSMsgType.TEXT and frame.fin:
            self.early.append(frame.get_payload_as_utf8_text())
        elif frame.msg_type == WSMsgType.BINARY and frame.fin:
            self.early.append(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        if self.connection is not None:
            self.connection._on_disconnected()


class RealtimeConnection:
    """One model session. `await RealtimeConnection.open(...)`, then `run_reader(handler)` and `send_nowait()`."""

    def __init__(self, transport: WSTransport, listener: _Listener, *, max_unsent_bytes: int = MAX_UNSENT_BYTES) -> None:
        self._transport = transport
        self._max_unsent = max_unsent_bytes
        self._handler: MessageHandler | None = None
        self._context: contextvars.Context | None = None
        self._pending: list[str | bytes] = listener.early
        listener.early = []
        self._fragments: list[bytes] = []
        self._fragment_type = WSMsgType.TEXT
        self._failure: BaseException | None = None
        self._closed = asyncio.get_running_loop().create_future()
        listener.connection = self
        if listener.disconnected:
            self._on_disconnected()

    @classmethod
    async def open(
        cls, url: str, *, model: str, api_key: str | None, connect_timeout_s: float,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
    ) -> RealtimeConnection:
        """Raises: UpstreamTimeout, UpstreamUnavailable (retryable unless the server refused us)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            async with asyncio.timeout(connect_timeout_s):
                transport, listener = await ws_connect(
                    _Listener, realtime_url_with_model(url, model),
                    websocket_handshake_timeout=connect_timeout_s,
                    extra_headers=headers,
                    enable_auto_ping=True, auto_ping_idle_timeout=PING_IDLE_S, auto_ping_reply_timeout=PING_IDLE_S,
                    max_frame_size=MAX_MESSAGE_BYTES,
                    disconnect_on_exception=True,
                )
        except TimeoutError:
            raise UpstreamTimeout(SERVICE, "connect timed out", retryable=True) from None
        except WSInvalidStatusError as exc:
            status = int(exc.response.status) if exc.response is not None else 0
            raise UpstreamUnavailable(SERVICE, f"upgrade refused with {status}", retryable=status >= 500) from None
        except (OSError, WSError):
            raise UpstreamUnavailable(SERVICE, "connect failed", retryable=True) from None
        assert isinstance(listener, _Listener)
        return cls(transport, listener, max_unsent_bytes=max_unsent_bytes)

    # ------------------------------------------------------------------ sending
    def send_nowait(self, text: str) -> None:
        """Write one client event now (dropped once the socket is closed; the reader reports the close).

        Raises:
            UpstreamProtocolError: the model has stopped reading (too much unsent data); the call should end.
        """
        transport = self._transport
        if transport.is_disconnected or transport.is_close_frame_sent:
            return
        if transport.underlying_transport.get_write_buffer_size() > self._max_unsent:
            raise UpstreamProtocolError(SERVICE, "model is not reading; send buffer full", retryable=False)
        transport.send(WSMsgType.TEXT, text.encode())

    # ------------------------------------------------------------------ receiving
    async def run_reader(self, handler: MessageHandler) -> None:
        """Hand every message to `handler` (synchronously, in this task's contextvars context) until the
        socket closes. If `handler` raises, the socket is closed and the exception re-raised here."""
        self._context = contextvars.copy_context()
        self._handler = handler
        pending, self._pending = self._pending, []
        for message in pending:
            if self._handler is None:
                break
            self._deliver(message)
        try:
            await asyncio.shield(self._closed)
        finally:
            self._handler = None
        if self._failure is not None:
            raise self._failure

    def _deliver(self, message: str | bytes) -> None:
        handler = self._handler
        if handler is None:
            self._pending.append(message)
            return
        try:
            if self._context is None:
                handler(message)
            else:
                self._context.run(handler, message)
        except Exception as exc:  # noqa: BLE001 - re-raised by run_reader, in the call's task
            self._failure = exc
            self._handler = None
            self._transport.disconnect(graceful=False)
            self._on_disconnected()

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.TEXT or msg_type == WSMsgType.BINARY:
            if frame.fin:
                if self._fragments:  # a new message while one was unfinished: the peer broke the protocol
                    self._fragments = []
                self._deliver(frame.get_payload_as_utf8_text() if msg_type == WSMsgType.TEXT
                              else frame.get_payload_as_bytes())
                return
            self._fragment_type = msg_type
            self._fragments = [frame.get_payload_as_bytes()]
        elif msg_type == WSMsgType.CONTINUATION:
            if not self._fragments:
                return
            self._fragments.append(frame.get_payload_as_bytes())
            if sum(len(part) for part in self._fragments) > MAX_MESSAGE_BYTES:
                self._fragments = []
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
                return
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                if self._fragment_type == WSMsgType.TEXT:
                    try:
                        self._deliver(data.decode())
                    except UnicodeDecodeError:
                        transport.send_close(WSCloseCode.INVALID_TEXT)
                        transport.disconnect()
                else:
                    self._deliver(data)
        elif msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _on_disconnected(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def close(self) -> None:
        """Close politely (close frame, then wait for the peer); callers bound the wait."""
        transport = self._transport
        if not transport.is_disconnected:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            try:
                await transport.wait_disconnected()
            finally:
                if not transport.is_disconnected:
                    transport.disconnect(graceful=False)

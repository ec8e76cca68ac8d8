"""uvicorn's sans-I/O WebSocket protocol with a direct text channel for the Media Stream.

Under plain ASGI every Twilio frame costs a queue put, a paused and resumed socket read and a task
wake-up on the way in, and an awaited `send` on the way out. At 50 frames a second each way per call
that was the largest share of a loaded voice server's CPU (docs/benchmarks.md). This protocol offers
the app an ASGI extension, `switchboard.direct_text`: the app may register a callback that receives
each complete text message synchronously (in the protocol's `data_received`), and may write text
messages synchronously. Everything else (the handshake, pings, close, binary frames, disconnects)
stays on the normal ASGI path, and an app that ignores the extension sees plain ASGI. Servers that do
not use this protocol simply do not offer the extension; `TwilioStream` then falls back to ASGI.

Use: `uvicorn.Config(..., ws=WS_PROTOCOL)`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

EXTENSION = "switchboard.direct_text"
WS_PROTOCOL = "switchboard.bridge.adapters.direct_ws:DirectTextWebSocketProtocol"


class DirectTextChannel:
    """The app's handle on one WebSocket: a synchronous text receiver and a synchronous text writer."""

    __slots__ = ("_context", "_failure", "_on_text", "_protocol")

    def __init__(self, protocol: DirectTextWebSocketProtocol) -> None:
        self._protocol = protocol
        self._on_text: Callable[[str], None] | None = None
        self._context: contextvars.Context | None = None
        self._failure: BaseException | None = None

    def set_receiver(self, on_text: Callable[[str], None]) -> None:
        """From now on complete text messages go to `on_text` (run in the caller's contextvars context).

        If `on_text` raises, the exception is kept (see `failure`) and the app's next `receive()`
        returns a disconnect, so the app's reader ends and can re-raise it.
        """
        self._context = contextvars.copy_context()
        self._on_text = on_text

    def clear_receiver(self) -> None:
        self._on_text = None
        self._context = None

    def queued(self) -> bool:
        """Whether messages wait in the ASGI queue (they arrived before the receiver was set)."""
        return not self._protocol.queue.empty()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def write_buffer_size(self) -> int:
        return int(self._protocol.transport.get_write_buffer_size())

    def send_text(self, text: str) -> bool:
        """Write one text message now. False (nothing written) once the socket is closing or closed."""
        protocol = self._protocol
        if protocol.disconnected or protocol.close_sent or not protocol.handshake_complete:
            return False
        transport = protocol.transport
        if transport.is_closing():
            return False
        try:
            protocol.conn.send_text(text.encode())
        except InvalidState:
            return False
        transport.write(b"".join(protocol.conn.data_to_send()))
        return True

    def _deliver(self, text: str) -> None:
        on_text = self._on_text
        if on_text is None or self._failure is not None:
            return
        try:
            context = self._context
            if context is None:
                on_text(text)
            else:
                context.run(on_text, text)
        except Exception as exc:  # noqa: BLE001 - handed to the app's reader, which re-raises it
            self._failure = exc
            self.clear_receiver()
            self._protocol.queue.put_nowait({"type": "websocket.disconnect", "code": 1011})


class DirectTextWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol plus the `switchboard.direct_text` ASGI extension."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None when the upgrade was refused before the app ran
            self.direct = DirectTextChannel(self)
            scope["extensions"][EXTENSION] = self.direct

    def send_receive_event_to_app(self) -> None:
        direct: DirectTextChannel | None = getattr(self, "direct", None)
        if (direct is None or direct._on_text is None or self.close_sent
                or self.curr_msg_data_type != "text"):
            super().send_receive_event_to_app()
            return
        frames = self.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.logger.warning("invalid UTF-8 in a text frame; closing with 1007")
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        direct._deliver(text)

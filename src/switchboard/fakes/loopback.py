"""LoopbackServer: an ASGI app under uvicorn on a 127.0.0.1 socket, run by one task; for fakes, tests, the demo.

The socket is created with IPPROTO_TCP so asyncio turns on TCP_NODELAY (without it every small response
waits ~40 ms for delayed ACKs).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Literal

from switchboard.bridge.adapters.direct_ws import WS_PROTOCOL as DIRECT_WS_PROTOCOL


class LoopbackServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, name: str = "loopback-server",
                 lifespan: Literal["on", "off"] = "off", timeout_s: float = 10.0, ws: str = DIRECT_WS_PROTOCOL) -> None:
        """`ws` is uvicorn's WebSocket protocol: by default the voice server's (plain ASGI plus the direct
        text channel, see bridge/adapters/direct_ws.py); "websockets-sansio" for uvicorn's own."""
        self.app = app
        self._ws = ws
        self.host = host
        self.name = name
        self.timeout_s = timeout_s
        self._requested_port = port
        self._lifespan = lifespan
        self._socket: socket.socket | None = None
        self._server: Any = None
        self._runner: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError(f"{self.name} is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._requested_port))
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", lifespan=self._lifespan,
                                access_log=False, ws_max_size=1 << 20, ws=self._ws)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None
        self._runner = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket]), name=self.name)
        async with asyncio.timeout(self.timeout_s):
            while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                if self._runner.done():
                    self._runner.result()
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._runner is not None:
            self._server.should_exit = True
            try:
                async with asyncio.timeout(self.timeout_s):
                    await asyncio.shield(self._runner)
            except TimeoutError:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._runner
                raise
        if self._socket is not None:
            self._socket.close()

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

"""A stand-in Opik backend on 127.0.0.1: records every request the Opik SDK sends (bodies decoded)."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeOpik:
    """Answers Opik's REST API the way the server does for writes (204) and records what it got.

    `delay_s` holds every answer that long, like a slow or distant backend.
    """

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                encoding = (self.headers.get("content-encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                with fake._lock:
                    fake.requests.append(Recorded(self.command, self.path, dict(self.headers), raw))
                if fake.delay_s:
                    time.sleep(fake.delay_s)

            def do_POST(self) -> None:
                self._record()
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            do_PATCH = do_PUT = do_POST

            def do_GET(self) -> None:
                self._record()
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-opik", daemon=True)

    @property
    def url(self) -> str:
        """What OPIK_URL_OVERRIDE points at."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/api"

    def __enter__(self) -> FakeOpik:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _items(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        with self._lock:
            recorded = list(self.requests)
        for request in recorded:
            if request.method == "POST" and request.path.endswith(path):
                yield from request.json()[key]

    def traces(self) -> list[dict[str, Any]]:
        return list(self._items("/v1/private/traces/batch", "traces"))

    def spans(self) -> list[dict[str, Any]]:
        return list(self._items("/v1/private/spans/batch", "spans"))

    def all_bodies(self) -> bytes:
        with self._lock:
            return b"\n".join(request.body for request in self.requests)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Block until `condition()` holds (call through asyncio.to_thread from a test)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake Opik backend did not get what was expected")
            time.sleep(0.05)

"""A webhook consumer on 127.0.0.1 that checks every request with the Standard Webhooks reference library.

Each request is verified with `standardwebhooks.Webhook(secret).verify(raw_body, headers)` (the spec's
own Python package, pinned in the test extra) and recorded; the answer follows a script of statuses
(then 200), each optionally held for a while, so tests can fail an endpoint a given number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from standardwebhooks import Webhook

from switchboard.fakes.loopback import LoopbackServer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True, slots=True)
class ReceivedWebhook:
    message_id: str
    timestamp: str
    signature: str
    body: bytes
    payload: Any  # what the library returned, or None when verification failed
    error: str | None
    status_code: int
    at: datetime
    started_s: float  # time.monotonic() when the request arrived and when its answer went out
    finished_s: float

    @property
    def is_verified(self) -> bool:
        return self.error is None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    secret: str = SECRET
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    answers: list[int] = field(default_factory=list)
    """Statuses for the next requests, in order; `default_status` once used up."""
    default_status: int = 200
    answer_headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0
    checks_time_against_wall: bool = False
    """True: the 5-minute timestamp tolerance is checked against `wall` (a test's clock moved days ahead)
    rather than the real time; the signature is still the library's (`Webhook.sign`)."""
    received: list[ReceivedWebhook] = field(default_factory=list)
    """Requests answered, in order of their answers."""
    arrived: list[str] = field(default_factory=list)
    """webhook-ids of requests as they arrive, before any hold."""
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: LoopbackServer | None = None

    _url: str | None = None

    @property
    def url(self) -> str:
        """Still answers after the receiver stopped (for assertions)."""
        assert self._url is not None, "the receiver has not started"
        return self._url

    def _verify_at_wall(self, verifier: Webhook, raw: bytes, headers: dict[str, str]) -> Any:
        sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
        if abs((self.wall() - sent_at).total_seconds()) > 300:
            raise ValueError("timestamp more than 5 minutes from the receiver's clock")
        expected = verifier.sign(headers["webhook-id"], sent_at, raw.decode())
        if not any(hmac.compare_digest(expected, given) for given in headers["webhook-signature"].split(" ")):
            raise ValueError("no matching signature")
        return json.loads(raw)

    def build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None)
        verifier = Webhook(self.secret)

        @app.post("/hooks/switchboard")
        async def receive(request: Request) -> Response:
            started_s = time.monotonic()
            raw = await request.body()
            headers = dict(request.headers)
            payload: Any = None
            error: str | None = None
            try:
                payload = self._verify_at_wall(verifier, raw, headers) if self.checks_time_against_wall else (
                    verifier.verify(raw, headers))
            except Exception as exc:  # the library raises several types for malformed input (addendum C.3)
                error = f"{type(exc).__name__}: {exc}"
            status_code = 401 if error else (self.answers.pop(0) if self.answers else self.default_status)
            async with self._arrived:
                self.arrived.append(headers.get("webhook-id", ""))
                self._arrived.notify_all()
            if self.hold_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=self.hold_s)
            record = ReceivedWebhook(
                headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""),
                headers.get("webhook-signature", ""), raw, payload, error, status_code, self.wall(),
                started_s, time.monotonic(),
            )
            async with self._arrived:
                self.received.append(record)
                self._arrived.notify_all()
            return Response(b"{}", status_code=status_code, media_type="application/json",
                            headers=self.answer_headers if status_code >= 300 else {})

        return app

    async def wait_for_arrivals(self, count: int, timeout_s: float = 10.0) -> list[str]:
        """Wait until `count` requests have arrived (answered or still held); return their webhook-ids."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.arrived) >= count)
        return list(self.arrived)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedWebhook]:
        """Wait until `count` requests have arrived; return them all."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    async def __aenter__(self) -> WebhookReceiver:
        self._server = LoopbackServer(self.build_app(), name="webhook-receiver")
        await self._server.start()
        self._url = self._server.base_url + "/hooks/switchboard"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._server is not None:
            await self._server.stop()

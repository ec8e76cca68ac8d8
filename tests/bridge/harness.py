"""A whole voice stack on loopback for end-to-end call tests.

The AI server is the real app on a throwaway SQLite database (in-process, httpx.ASGITransport);
the model is FakeRealtimeServer on 127.0.0.1; the voice server runs under uvicorn on 127.0.0.1:0;
the caller is TwilioCaller, which signs like Twilio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from switchboard.bridge.adapters.tickets_client import AppServerOutbox
from switchboard.bridge.app import create_app as create_voice_app
from switchboard.config import AISettings, AppSettings, VoiceSettings
from switchboard.fakes.loopback import LoopbackServer
from switchboard.fakes.realtime_server import FakeRealtimeServer
from switchboard.fakes.twilio_rest import FakeTwilioRest
from switchboard.knowledge.app import create_app as create_ai_app
from switchboard.knowledge.database import create_engine, migrate
from switchboard.knowledge.embeddings import load_embedder
from switchboard.knowledge.tenant_file import parse_tenant_file
from switchboard.knowledge.tenant_loader import load_tenants
from switchboard.simulator.twilio_caller import TwilioCaller
from switchboard.tickets.app import create_app as create_tickets_app

AUTH_TOKEN = "test-auth-token-1234567890"
ACCOUNT_SID = "AC" + "0" * 32
SERVICE_TOKEN = "test-service-token-abcdef"
API_KEY = "sk-test-not-a-real-key-0123456789"

TENANT_YAML = """
tenants:
  - key: acme-support
    company: Acme Outdoor
    numbers: ["+15551230001"]
    sip_domains: ["acme.sip.twilio.com"]
    application_sids: []
    greeting: "Thanks for calling Acme Outdoor, how can I help?"
    instructions: "You help callers with orders, returns and store hours."
    voice: {provider: openai, name: marin, speed: 1.1}
    transcriber: none
    business_hours: {timezone: America/New_York, mon-fri: "09:00-18:00", sat: "10:00-14:00"}
    transfer: {number: "+15559990000", caller_id: "+15551230001"}
    credits: 500
  - key: broke-co
    company: Broke Co
    numbers: ["+15551230002"]
    greeting: "Hello."
    instructions: "Be brief."
    voice: {provider: openai, name: cedar, speed: 1.0}
    credits: 0
"""

_EMBEDDER: Any = None


async def load_tenant_yaml(database_url: str, text: str, folder: Path) -> None:
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = await asyncio.to_thread(load_embedder)
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        await load_tenants(engine, parse_tenant_file(text), folder, _EMBEDDER, now=datetime.now(UTC))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def serve_on_loopback(app: Any, ws: str | None = None) -> AsyncIterator[str]:
    """Run an ASGI app (with its lifespan) under uvicorn on 127.0.0.1:<free port>; yields its base URL.

    `ws`: uvicorn's WebSocket protocol; None is the voice server's own (with the direct text channel)."""
    extra = {} if ws is None else {"ws": ws}
    async with LoopbackServer(app, lifespan="on", name="uvicorn", **extra) as server:
        yield server.base_url


class SwitchableTransport(httpx.AsyncBaseTransport):
    """A network in front of an in-process app that a test can take down (connection refused) and back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.is_down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.is_down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class VoiceStack:
    voice_url: str
    model: FakeRealtimeServer
    voice_app: Any
    settings: VoiceSettings
    app_server: httpx.AsyncClient
    app_network: SwitchableTransport
    twilio_rest: FakeTwilioRest
    outbox: AppServerOutbox
    ai_network: SwitchableTransport | None = None  # None when the AI server is reached over real TCP

    async def conversation(self, call_sid: str) -> dict[str, Any]:
        response = await self.app_server.get("/api/conversations", params={"call_sid": call_sid})
        assert response.status_code == 200, response.text
        [conversation] = response.json()["conversations"]
        return dict(conversation)

    async def tickets(self, call_sid: str) -> list[dict[str, Any]]:
        response = await self.app_server.get("/api/tickets", params={"call_sid": call_sid})
        assert response.status_code == 200, response.text
        return list(response.json()["tickets"])

    def caller(self, **kwargs: Any) -> TwilioCaller:
        return TwilioCaller(self.voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, **kwargs)


@contextlib.asynccontextmanager
async def voice_stack(tmp_path: Path, *, tenant_yaml: str = TENANT_YAML, model: FakeRealtimeServer | None = None,
                      engine_url: str | None = None, ws_protocol: str | None = None,
                      app_environ: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[VoiceStack]:
    """`ws_protocol="websockets-sansio"` serves the stream through plain ASGI (no direct text channel).
    `app_environ`: the App server's environment for `${VAR}` in tenants' integrations."""
    ai_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_yaml(ai_url, tenant_yaml, tmp_path)
    ai_app = create_ai_app(AISettings(AI_DATABASE_URL=ai_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    # The App server reads tenants' integrations from the AI server in-process, and delivers promptly.
    tickets_app = create_tickets_app(
        AppSettings(APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db", SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN,
                    AI_SERVER_URL="http://ai.internal", SWITCHBOARD_INTEGRATIONS_REFRESH_S=0.2,
                    SWITCHBOARD_DELIVERY_POLL_S=0.05),
        environ=app_environ or {}, ai_transport=httpx.ASGITransport(app=ai_app),
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(ai_app.router.lifespan_context(ai_app))
        await stack.enter_async_context(tickets_app.router.lifespan_context(tickets_app))
        app_network = SwitchableTransport(httpx.ASGITransport(app=tickets_app))
        outbox_http = await stack.enter_async_context(httpx.AsyncClient(transport=app_network))
        outbox = AppServerOutbox("http://app.internal", SERVICE_TOKEN, spool_dir=tmp_path / "outbox",
                                 http_client=outbox_http, retry_initial_s=0.05, retry_max_s=0.2)
        app_reader = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=tickets_app), base_url="http://app.internal",
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}))
        rest = await stack.enter_async_context(
            FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, auto_create_calls=True))
        fake = model or FakeRealtimeServer(api_key=API_KEY)
        if engine_url is None:
            await stack.enter_async_context(fake)
        values: dict[str, Any] = {
            # With an engine URL the voice server runs as with no API key: on the local engine.
            "OPENAI_API_KEY": API_KEY if engine_url is None else None,
            "SWITCHBOARD_ENGINE_URL": engine_url or "ws://127.0.0.1:9/v1/realtime",
            "OPENAI_REALTIME_URL": fake.realtime_url if engine_url is None else "ws://127.0.0.1:9/v1/realtime",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN,
            "AI_SERVER_URL": "http://ai.internal",
            "APP_SERVER_URL": "http://app.internal",
            "TWILIO_API_BASE_URL": rest.base_url,
        }
        values.update(overrides)
        settings = VoiceSettings(**values)
        ai_network = SwitchableTransport(httpx.ASGITransport(app=ai_app))
        voice_app = create_voice_app(settings, ai_transport=ai_network, recorder=outbox)
        voice_url = await stack.enter_async_context(serve_on_loopback(voice_app, ws_protocol))
        yield VoiceStack(voice_url=voice_url, model=fake, voice_app=voice_app, settings=settings,
                         app_server=app_reader, app_network=app_network, ai_network=ai_network,
                         twilio_rest=rest, outbox=outbox)


async def wait_until(predicate: Any, timeout_s: float = 5.0, interval_s: float = 0.01) -> None:
    """Poll a condition of the system under test (bounded)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling observable state, there is no event to wait on
            await asyncio.sleep(interval_s)

"""The voice stack of tests/bridge/harness.py with the observability ports open: an observer factory,
the AI server on a real TCP port (so httpx instrumentation sees the request), and an instrumentation hook."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from switchboard.bridge.adapters.tickets_client import AppServerOutbox
from switchboard.bridge.app import create_app as create_voice_app
from switchboard.bridge.observability import ObserverFactory
from switchboard.config import AISettings, AppSettings, VoiceSettings
from switchboard.fakes.realtime_server import FakeRealtimeServer
from switchboard.fakes.twilio_rest import FakeTwilioRest
from switchboard.knowledge.app import create_app as create_ai_app
from switchboard.tickets.app import create_app as create_tickets_app
from tests.bridge.harness import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    SERVICE_TOKEN,
    TENANT_YAML,
    SwitchableTransport,
    VoiceStack,
    load_tenant_yaml,
    serve_on_loopback,
)

Instrument = Callable[[Any, str], None]


@contextlib.asynccontextmanager
async def observed_voice_stack(
    tmp_path: Path, *, tenant_yaml: str = TENANT_YAML, observer_factory: ObserverFactory | None = None,
    instrument: Instrument | None = None, app_over_tcp: bool = False, **overrides: Any,
) -> AsyncIterator[tuple[VoiceStack, Any, str]]:
    """Yields (stack, ai_app, app_server_url). The AI server runs under uvicorn on 127.0.0.1, and so does the
    App server with `app_over_tcp` (else it is in-process and its URL is http://app.internal)."""
    ai_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_yaml(ai_url, tenant_yaml, tmp_path)
    ai_app = create_ai_app(AISettings(AI_DATABASE_URL=ai_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    tickets_app = create_tickets_app(AppSettings(APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db",
                                                 SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    if instrument is not None:
        instrument(ai_app, "ai")
        instrument(tickets_app, "app")
    async with contextlib.AsyncExitStack() as stack:
        ai_server_url = await stack.enter_async_context(serve_on_loopback(ai_app))
        if app_over_tcp:
            app_url = await stack.enter_async_context(serve_on_loopback(tickets_app))
            app_transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
        else:
            await stack.enter_async_context(tickets_app.router.lifespan_context(tickets_app))
            app_url = "http://app.internal"
            app_transport = httpx.ASGITransport(app=tickets_app)
        app_network = SwitchableTransport(app_transport)
        outbox_http = await stack.enter_async_context(httpx.AsyncClient(transport=app_network))
        outbox = AppServerOutbox(app_url, SERVICE_TOKEN, spool_dir=tmp_path / "outbox",
                                 http_client=outbox_http, retry_initial_s=0.05, retry_max_s=0.2)
        app_reader = await stack.enter_async_context(httpx.AsyncClient(
            base_url=app_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            transport=None if app_over_tcp else httpx.ASGITransport(app=tickets_app)))
        rest = await stack.enter_async_context(
            FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, auto_create_calls=True))
        model = FakeRealtimeServer(api_key=API_KEY)
        await stack.enter_async_context(model)
        values: dict[str, Any] = {
            "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": model.realtime_url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "AI_SERVER_URL": ai_server_url,
            "APP_SERVER_URL": app_url, "TWILIO_API_BASE_URL": rest.base_url,
        }
        values.update(overrides)
        settings = VoiceSettings(**values)
        voice_app = create_voice_app(settings, recorder=outbox, observer_factory=observer_factory)
        if instrument is not None:
            instrument(voice_app, "voice")
        voice_url = await stack.enter_async_context(serve_on_loopback(voice_app))
        yield (VoiceStack(voice_url=voice_url, model=model, voice_app=voice_app, settings=settings,
                          app_server=app_reader, app_network=app_network, twilio_rest=rest, outbox=outbox),
               ai_app, app_url)

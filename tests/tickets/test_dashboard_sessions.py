"""Dashboard sessions behind a TLS-terminating load balancer (X-Forwarded-Proto from trusted proxies only)
and expired sessions cleared out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.integrations.test_processes import app_process
from tests.tickets.dashboard_data import PASSWORD, add_user, csrf_of, sign_in
from tests.tickets.harness import SERVICE_TOKEN

from switchboard.clock import ManualClock
from switchboard.config import AppSettings, SettingsError, load_settings
from switchboard.tickets import create_app
from switchboard.tickets.database import create_engine, create_session_factory
from switchboard.tickets.ui.models import AuditEvent, UiSession, User

LOAD_BALANCER = ("10.0.3.7", 41000)
STRANGER = ("203.0.113.9", 52000)


@asynccontextmanager
async def app_server(database_url: str, clock: ManualClock, **settings: object) -> AsyncIterator[FastAPI]:
    app = create_app(load_settings(AppSettings, APP_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN,
                                   SWITCHBOARD_SESSION_SECRET="test-session-secret-0123456789", **settings),
                     clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def browser(app: FastAPI, client: tuple[str, int], headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url="http://app.test",
                             headers=headers)


async def sign_in_behind_tls(client: httpx.AsyncClient, email: str) -> httpx.Response:
    """`sign_in` as a browser speaking https to the load balancer does it: the login form's cookie is
    Secure, so it is sent back by hand (the client here talks plain http, as the balancer does)."""
    form = await client.get("/ui/login")
    login_cookie = next(v for k, v in form.headers.multi_items() if k == "set-cookie" and v.startswith("sb_login_csrf="))
    assert "; Secure" in login_cookie
    return await client.post("/ui/login", headers={"Cookie": login_cookie.split(";", 1)[0]}, data={
        "email": email, "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": "/ui/calls"})


def session_cookie(response: httpx.Response) -> str:
    return next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("sb_session="))


async def test_the_session_cookie_is_secure_when_a_trusted_proxy_says_https(database_url: str) -> None:
    clock = ManualClock(wall_start=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    async with app_server(database_url, clock, SWITCHBOARD_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8") as app:
        await add_user(app.state.context.engine, "dev@acme.test", "acme-support", "developer")
        https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.20"}
        async with browser(app, LOAD_BALANCER, https) as through_balancer:
            behind_tls = await sign_in_behind_tls(through_balancer, "dev@acme.test")
        async with browser(app, LOAD_BALANCER, {"X-Forwarded-Proto": "http"}) as plain_balancer:
            plain = await sign_in(plain_balancer, "dev@acme.test")
        async with browser(app, STRANGER, https) as stranger:
            spoofed = await sign_in(stranger, "dev@acme.test")
        async with create_session_factory(app.state.context.engine)() as session, session.begin():
            addresses = list(await session.scalars(
                select(AuditEvent.client_ip).where(AuditEvent.action == "sign_in.succeeded").order_by(AuditEvent.id)))

    assert behind_tls.status_code == plain.status_code == spoofed.status_code == 303
    assert "; Secure" in session_cookie(behind_tls) and "HttpOnly" in session_cookie(behind_tls)
    assert "Secure" not in session_cookie(plain)
    assert "Secure" not in session_cookie(spoofed), "forwarded headers from an untrusted client must be ignored"
    # The balancer names the client (what the sign-in rate limit counts); a stranger cannot pick one.
    assert addresses == ["198.51.100.20", LOAD_BALANCER[0], STRANGER[0]]


async def test_no_proxy_is_trusted_when_the_setting_is_empty(database_url: str) -> None:
    clock = ManualClock(wall_start=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    async with app_server(database_url, clock, SWITCHBOARD_TRUSTED_PROXIES="") as app:
        await add_user(app.state.context.engine, "dev@acme.test", "acme-support", "developer")
        async with browser(app, ("127.0.0.1", 5000), {"X-Forwarded-Proto": "https"}) as local:
            response = await sign_in(local, "dev@acme.test")
    assert response.status_code == 303 and "Secure" not in session_cookie(response)


def test_a_malformed_trusted_proxies_setting_stops_start_up_naming_it() -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_TRUSTED_PROXIES.*'lb.internal' is not an IP"):
        load_settings(AppSettings, SWITCHBOARD_TRUSTED_PROXIES="10.0.0.1, lb.internal")


async def test_expired_sessions_are_deleted_at_the_next_sign_in(database_url: str) -> None:
    clock = ManualClock(wall_start=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    async with app_server(database_url, clock, SWITCHBOARD_SESSION_TTL_S=3600) as app:
        engine = app.state.context.engine
        for email in ("old@acme.test", "recent@acme.test", "new@acme.test"):
            await add_user(engine, email, "acme-support", "viewer")
        async with (browser(app, ("127.0.0.1", 1)) as old, browser(app, ("127.0.0.1", 2)) as recent,
                    browser(app, ("127.0.0.1", 3)) as new):
            assert (await sign_in(old, "old@acme.test")).status_code == 303
            clock.advance(1800)
            assert (await sign_in(recent, "recent@acme.test")).status_code == 303
            clock.advance(1801)  # old's session has expired, recent's has not
            assert (await old.get("/ui/calls")).status_code == 303
            assert await signed_in_users(app) == ["old@acme.test", "recent@acme.test"]
            assert (await sign_in(new, "new@acme.test")).status_code == 303
            assert await signed_in_users(app) == ["new@acme.test", "recent@acme.test"]
            assert (await recent.get("/ui/calls")).status_code == 200
            assert (await new.get("/ui/calls")).status_code == 200


async def signed_in_users(app: FastAPI) -> list[str]:
    """Whose sessions the App server's database still holds."""
    async with create_session_factory(app.state.context.engine)() as session, session.begin():
        return sorted(await session.scalars(select(User.email).join(UiSession, UiSession.user_id == User.id)))


@pytest.mark.multiprocess
async def test_switchboard_serve_app_believes_only_the_configured_proxy(tmp_path: Path) -> None:
    """The real `switchboard serve app` (uvicorn): a balancer at 127.0.0.2 is trusted, 127.0.0.1 is not
    (uvicorn's own default would trust it)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    async with app_process(database_url, "http://127.0.0.1:9", SWITCHBOARD_TRUSTED_PROXIES="127.0.0.2",
                           SWITCHBOARD_SESSION_SECRET="test-session-secret-0123456789") as (_process, base_url):
        engine = create_engine(database_url)
        try:
            await add_user(engine, "dev@acme.test", "acme-support", "developer")
        finally:
            await engine.dispose()
        https = {"X-Forwarded-Proto": "https"}
        balancer = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=balancer, base_url=base_url, headers=https) as through_balancer:
            behind_tls = await sign_in_behind_tls(through_balancer, "dev@acme.test")
        async with httpx.AsyncClient(base_url=base_url, headers=https) as local:
            spoofed = await sign_in(local, "dev@acme.test")
    assert behind_tls.status_code == spoofed.status_code == 303
    assert "; Secure" in session_cookie(behind_tls)
    assert "Secure" not in session_cookie(spoofed)

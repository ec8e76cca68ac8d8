"""Tenant isolation, for every route of the App server: a structural walk of the router (each route
takes the tenant-scope dependency, or is on a short public or service-only list) and a behavioural one
(tenant B asks every route for tenant A's call and ticket, and gets 404 or nothing of A's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import Mount
from tests.tickets.dashboard_data import ACME_SECRET, GLOBEX, Dashboard, create_key, csrf_of, sign_in
from tests.tickets.harness import build_app

from switchboard.tickets.database import create_session_factory
from switchboard.tickets.routes.dependencies import require_service_token
from switchboard.tickets.ui.accounts import AccountStore
from switchboard.tickets.ui.scope import TENANT_SCOPE_DEPENDENCIES

# Routes that show no tenant's data: probes, metrics and the sign-in form.
PUBLIC = {
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"),
    ("GET", "/health-check/live"), ("GET", "/health-check/ready"), ("GET", "/metrics"),
    ("GET", "/ui/login"), ("POST", "/ui/login"),
}


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _calls(sub)
    return found


def _routes(app: Any) -> list[tuple[str, RouteContext]]:
    """Every (method, route) the app answers, with the prefixes of included routers applied."""
    return [(method, route) for route in iter_route_contexts(app.routes) if route.methods
            for method in sorted(route.methods)]


def test_every_route_takes_the_tenant_scope_or_is_public_or_service_only(tmp_path: Any) -> None:
    app = build_app(f"sqlite+aiosqlite:///{tmp_path}/walk.db")
    unchecked = []
    routes = _routes(app)
    assert len(routes) >= 20, "the walk found too few routes: has FastAPI's router changed?"
    for method, route in routes:
        if not isinstance(route.original_route, APIRoute):
            assert (method, route.path) in PUBLIC, f"{method} {route.path} is not a FastAPI route: no dependencies"
            continue
        calls = _calls(route.dependant)
        scoped = any(dependency in calls for dependency in TENANT_SCOPE_DEPENDENCIES)
        service_only = require_service_token in calls
        if (method, route.path) in PUBLIC:
            assert not scoped, f"{method} {route.path} is listed public but reads through a tenant scope"
            continue
        if not (scoped or service_only):
            unchecked.append(f"{method} {route.path}")
        if service_only:
            assert method != "GET", f"{method} {route.path}: a read must take a tenant scope, not the service token"
    assert unchecked == [], f"routes without the tenant check: {unchecked}"
    mounts = [route.path for route in app.routes if isinstance(route, Mount)]
    assert mounts == ["/ui/static"], "only the static files may be mounted outside the router"


def _url(path: str, dashboard: Dashboard) -> str:
    values = {"call_sid": dashboard.seeded.acme_ended, "ticket_id": str(dashboard.seeded.acme_ticket_id)}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"the walk does not know how to fill {path}: teach it"
    return path


def _shows_acme(response: httpx.Response, dashboard: Dashboard) -> bool:
    body = response.text
    return any(marker in body for marker in (dashboard.seeded.acme_ended, dashboard.seeded.acme_live, ACME_SECRET,
                                             "+14155550123", "4155550123", "A-991"))


async def test_tenant_b_gets_nothing_of_tenant_a_from_any_route(dashboard: Dashboard) -> None:
    globex_key = await create_key(dashboard.engine, GLOBEX, "admin")
    await create_key(dashboard.engine, "acme-support", "viewer")
    acme_key_id = 2
    async with dashboard.browser() as globex_browser, dashboard.with_bearer(globex_key) as globex_api:
        assert (await sign_in(globex_browser, "admin@globex.test")).status_code == 303
        csrf = csrf_of((await globex_browser.get("/ui/calls")).text)
        walked = 0
        for method, route in _routes(dashboard.app):
            if (method, route.path) in PUBLIC:
                continue
            assert route.path is not None
            url = _url(route.path, dashboard)
            client = globex_api if route.path.startswith("/api/") else globex_browser
            if method == "GET":
                response = await client.get(url, params={"call_sid": dashboard.seeded.acme_ended}
                                            if route.path.startswith("/api/") else None)
                assert response.status_code in (200, 303, 404), f"GET {route.path}: {response.status_code}"
                assert not _shows_acme(response, dashboard), f"GET {route.path} showed tenant A's data"
                if route.path.startswith("/api/"):
                    assert all(not rows for rows in response.json().values()), f"GET {route.path} listed A's rows"
            elif route.path.startswith("/api/"):
                response = await client.request(method, url, json={})
                assert response.status_code == 401, f"{method} {route.path} took a tenant key for a write"
            else:
                form = {"csrf_token": csrf, "status": "done", "email": "viewer@acme.test", "key_id": str(acme_key_id),
                        "role": "viewer", "password": "a long password", "tenant": "acme-support"}
                response = await client.request(method, url, data=form)
                assert response.status_code in (303, 400, 404), f"{method} {route.path}: {response.status_code}"
                assert not _shows_acme(response, dashboard)
            walked += 1
        assert walked >= 12
    tickets = (await dashboard.service.get("/api/tickets", params={"call_sid": dashboard.seeded.acme_ended})).json()
    assert [t["status"] for t in tickets["tickets"]] == ["open"], "tenant B changed tenant A's ticket"
    async with create_session_factory(dashboard.engine)() as session:
        store = AccountStore(session)
        users = {(u.email, u.tenant) for u in await store.list_users()}
        keys = {k.id: (k.tenant, k.revoked_at) for k in await store.list_keys()}
    assert ("viewer@acme.test", "acme-support") in users, "tenant B's admin removed tenant A's user"
    assert ("viewer@acme.test", GLOBEX) not in users
    assert keys[acme_key_id] == ("acme-support", None), "tenant B's admin revoked tenant A's key"


@pytest.mark.parametrize("path", ["/ui/calls/{acme}", "/ui/calls/{acme}/events"])
async def test_another_tenants_call_and_stream_answer_404(dashboard: Dashboard, path: str) -> None:
    async with dashboard.browser() as browser:
        await sign_in(browser, "dev@globex.test")
        response = await browser.get(path.format(acme=dashboard.seeded.acme_ended))
        assert response.status_code == 404
        assert dashboard.seeded.acme_ended not in response.text or "no call" in response.text


async def test_api_keys_see_their_tenant_only_and_viewers_see_no_tool_details(dashboard: Dashboard) -> None:
    seeded = dashboard.seeded
    viewer_key = await create_key(dashboard.engine, "acme-support", "viewer")
    developer_key = await create_key(dashboard.engine, "acme-support", "developer")
    async with dashboard.with_bearer(viewer_key) as viewer, dashboard.with_bearer(developer_key) as developer:
        listed = (await viewer.get("/api/conversations")).json()["conversations"]
        assert {c["call_sid"] for c in listed} == {seeded.acme_ended, seeded.acme_live, seeded.acme_old}
        (call,) = (await viewer.get("/api/conversations", params={"call_sid": seeded.acme_ended})).json()["conversations"]
        tools = [m for m in call["messages"] if m["role"] == "tool"]
        assert tools and all(m["arguments"] is None and m["result"] is None for m in tools)
        (dev_call,) = (await developer.get("/api/conversations", params={"call_sid": seeded.acme_ended})).json()[
            "conversations"]
        assert [m["arguments"] for m in dev_call["messages"] if m["role"] == "tool"][0] == {"order_id": "A-991"}
        assert (await viewer.get("/api/conversations", params={"call_sid": seeded.globex_ended})).json() == {
            "conversations": []}
        tickets = (await viewer.get("/api/tickets")).json()["tickets"]
        assert [t["call_sid"] for t in tickets] == [seeded.acme_ended]
        assert tickets[0]["phone_number"] == "+1******0123"
        assert (await developer.get("/api/tickets")).json()["tickets"][0]["phone_number"] == "+14155550123"
    everything = (await dashboard.service.get("/api/conversations")).json()["conversations"]
    assert seeded.globex_ended in {c["call_sid"] for c in everything}


async def test_an_unknown_or_revoked_key_is_refused(dashboard: Dashboard) -> None:
    from switchboard.tickets.database import create_session_factory
    from switchboard.tickets.ui.accounts import AccountStore

    async with dashboard.with_bearer("sbk_not-a-key") as stranger:
        assert (await stranger.get("/api/tickets")).status_code == 401
    key = await create_key(dashboard.engine, "acme-support", "viewer")
    async with dashboard.with_bearer(key) as client:
        assert (await client.get("/api/tickets")).status_code == 200
        async with create_session_factory(dashboard.engine)() as session:
            store = AccountStore(session)
            (listed,) = [k for k in await store.list_keys() if k.revoked_at is None]
            await store.revoke_key(listed.id, now=dashboard.clock.wall(), actor="test")
        assert (await client.get("/api/tickets")).status_code == 401

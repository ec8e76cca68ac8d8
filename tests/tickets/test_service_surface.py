"""The App server's edges: bearer token on /api, open probes and metrics, error bodies, schema."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from tests.tickets.harness import SERVICE_TOKEN, AppServer

from switchboard.tickets.models import Base

API_CALLS = [
    ("GET", "/api/conversations?call_sid=CA300", None),
    ("GET", "/api/tickets?call_sid=CA300", None),
    ("PUT", "/api/conversations/CA300", {"tenant": "t", "caller": "+15550000000", "started_at": "2026-11-26T16:00:00Z"}),
    ("POST", "/api/conversations/CA300/messages",
     {"message_id": "m", "role": "user", "text": "x", "at": "2026-11-26T16:00:00Z", "seq": 0}),
    ("POST", "/api/conversations/CA300/end",
     {"end_reason": "done", "ended_at": "2026-11-26T16:00:00Z", "duration_s": 1.0, "usage": {}, "turns": []}),
    ("POST", "/api/tickets",
     {"call_sid": "CA300", "kind": "callback", "phone_number": "+15550000000", "reason": "r", "requested_time": None}),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {SERVICE_TOKEN}", f"Bearer {SERVICE_TOKEN}x", "Bearer "],
    ids=["missing", "wrong", "wrong-scheme", "longer", "empty"],
)
async def test_every_api_call_needs_the_service_token(app_server: AppServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, url, body in API_CALLS:
        response = await app_server.anonymous.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (method, url)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    # Nothing was written by the refused requests.
    assert (await app_server.client.get("/api/conversations")).json() == {"conversations": []}
    assert (await app_server.client.get("/api/tickets")).json() == {"tickets": []}


async def test_probes_and_metrics_need_no_token(app_server: AppServer) -> None:
    assert (await app_server.anonymous.get("/health-check/live")).json() == {"status": "live"}
    ready = await app_server.anonymous.get("/health-check/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    metrics = await app_server.anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


async def test_metrics_count_requests_by_route_template_and_messages_by_outcome(app_server: AppServer) -> None:
    body = {"message_id": "m", "role": "user", "text": "x", "at": "2026-11-26T16:00:00Z", "seq": 0}
    await app_server.client.post("/api/conversations/CA301/messages", json=body)
    await app_server.client.post("/api/conversations/CA301/messages", json=body)
    await app_server.anonymous.get("/api/tickets")

    text = (await app_server.anonymous.get("/metrics")).text

    assert (
        'switchboard_app_http_requests_total{method="POST",route="/api/conversations/{call_sid}/messages",'
        'status="201"} 1.0' in text
    )
    assert 'switchboard_app_http_requests_total{method="GET",route="/api/tickets",status="401"} 1.0' in text
    assert 'switchboard_app_messages_stored_total{outcome="created"} 1.0' in text
    assert 'switchboard_app_messages_stored_total{outcome="replaced"} 1.0' in text
    assert "CA301" not in text


async def test_errors_have_one_shape_and_the_request_id_is_echoed(app_server: AppServer) -> None:
    unknown = await app_server.client.get("/api/nothing-here", headers={"X-Request-ID": "req-123"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": "Not Found"}
    assert unknown.headers["x-request-id"] == "req-123"
    bad_call_sid = await app_server.client.put(
        "/api/conversations/CA%20300", json={"tenant": "t", "caller": "+1", "started_at": "2026-11-26T16:00:00Z"}
    )
    assert bad_call_sid.status_code == 422
    assert bad_call_sid.json()["error"] == "invalid_request"
    assert "call_sid" in bad_call_sid.json()["detail"]


async def test_the_migrated_schema_matches_the_models(app_server: AppServer, database_url: str) -> None:
    def searched_by_the_database_itself(name: str | None, type_: str, parent_names: object) -> bool:
        # Transcript search: SQLite's FTS5 tables and PostgreSQL's expression index, made by the migration.
        return not (name or "").startswith(("messages_fts", "ix_messages_text_search"))

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"include_name": searched_by_the_database_itself})
        return list(compare_metadata(context, Base.metadata))

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()

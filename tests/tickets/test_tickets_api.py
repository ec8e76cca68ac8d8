"""Tickets through the real App server: created by the voice agent's tool, read by operators."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from structlog.testing import capture_logs
from tests.tickets.harness import AppServer

PHONE = "+15557654321"


def ticket_body(call_sid: str = "CA200", **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "call_sid": call_sid, "kind": "callback", "phone_number": PHONE,
        "reason": "Wants a refund for order 42", "requested_time": "tomorrow after 3pm",
    }
    body.update(overrides)
    return body


async def test_a_callback_ticket_is_created_open_with_the_full_number(app_server: AppServer) -> None:
    app_server.clock.advance(90.0)
    with capture_logs() as logs:
        response = await app_server.client.post("/api/tickets", json=ticket_body())

    assert response.status_code == 201
    ticket = response.json()
    assert {k: ticket[k] for k in ("call_sid", "kind", "phone_number", "reason", "requested_time", "status")} == {
        "call_sid": "CA200", "kind": "callback", "phone_number": PHONE,
        "reason": "Wants a refund for order 42", "requested_time": "tomorrow after 3pm", "status": "open",
    }
    assert datetime.fromisoformat(ticket["created_at"]) == datetime(2026, 11, 26, 15, 1, 30, tzinfo=UTC)
    assert ticket["created_at"].endswith("+00:00")
    created = [r for r in logs if r["event"] == "ticket.created"]
    assert created and created[0]["ticket_id"] == ticket["id"]
    assert all(PHONE not in repr(record) for record in logs)


async def test_tickets_are_listed_per_call(app_server: AppServer) -> None:
    first = (await app_server.client.post("/api/tickets", json=ticket_body("CA201", reason="one"))).json()
    second = (await app_server.client.post("/api/tickets", json=ticket_body("CA201", reason="two", requested_time=None))).json()
    await app_server.client.post("/api/tickets", json=ticket_body("CA202", reason="other call"))

    response = await app_server.client.get("/api/tickets", params={"call_sid": "CA201"})

    assert response.status_code == 200
    assert response.json() == {"tickets": [second, first]}
    assert second["requested_time"] is None


async def test_a_ticket_needs_a_known_kind_and_a_phone_number(app_server: AppServer) -> None:
    bad_kind = await app_server.client.post("/api/tickets", json=ticket_body(kind="complaint"))
    bad_number = await app_server.client.post("/api/tickets", json=ticket_body(phone_number="call me maybe"))

    for response in (bad_kind, bad_number):
        assert response.status_code == 422
        assert set(response.json()) == {"error", "detail"}
        assert response.json()["error"] == "invalid_request"
    assert "kind" in bad_kind.json()["detail"]
    assert "phone_number" in bad_number.json()["detail"]
    assert (await app_server.client.get("/api/tickets", params={"call_sid": "CA200"})).json() == {"tickets": []}


async def test_a_repeated_idempotency_key_returns_the_first_ticket_and_creates_none(app_server: AppServer) -> None:
    key = "CA203:transfer-callback:item_1"
    first = await app_server.client.post("/api/tickets", json=ticket_body("CA203", idempotency_key=key))
    # A retried webhook or an outbox redelivery: same key, answered with the ticket already made.
    again = await app_server.client.post("/api/tickets", json=ticket_body("CA203", idempotency_key=key))
    other = await app_server.client.post("/api/tickets", json=ticket_body("CA203", idempotency_key=key + "x"))
    bad = await app_server.client.post("/api/tickets", json=ticket_body("CA203", idempotency_key="has space"))

    assert first.status_code == 201 and again.status_code == 200 and other.status_code == 201
    assert again.json() == first.json()
    assert bad.status_code == 422
    listed = (await app_server.client.get("/api/tickets", params={"call_sid": "CA203"})).json()["tickets"]
    assert [t["id"] for t in listed] == [other.json()["id"], first.json()["id"]]


async def test_two_creations_racing_with_one_key_make_one_ticket(app_server: AppServer) -> None:
    body = ticket_body("CA204", idempotency_key="CA204:transfer-callback:item_1")
    answers = await asyncio.gather(*(app_server.client.post("/api/tickets", json=body) for _ in range(4)))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len((await app_server.client.get("/api/tickets", params={"call_sid": "CA204"})).json()["tickets"]) == 1

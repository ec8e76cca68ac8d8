"""A small seeded App server for the dashboard tests: two tenants, live and ended calls, tool calls,
an interrupted answer, tickets and latency rows; written through the real API the voice server uses."""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from switchboard.clock import ManualClock
from switchboard.tickets.database import create_session_factory
from switchboard.tickets.ui.accounts import AccountStore
from switchboard.tickets.ui.auth import hash_password

PASSWORD = "correct horse battery"
DAY = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

ACME = "acme-support"
GLOBEX = "globex-help"
# Text only tenant B's call contains: it must never show up for tenant A (and the other way round).
GLOBEX_SECRET = "GLOBEX-ONLY-PHRASE"
ACME_SECRET = "ACME-ONLY-PHRASE"


USERS = (
    ("viewer@acme.test", ACME, "viewer"),
    ("dev@acme.test", ACME, "developer"),
    ("admin@acme.test", ACME, "admin"),
    ("dev@globex.test", GLOBEX, "developer"),
    ("admin@globex.test", GLOBEX, "admin"),
    ("ops@switchboard.test", None, "operator"),
)


@dataclass(frozen=True)
class Seeded:
    acme_ended: str = "CAacme0001"
    acme_live: str = "CAacme0002"
    acme_old: str = "CAacme0003"
    globex_ended: str = "CAglobex001"
    acme_ticket_id: int = 0
    globex_ticket_id: int = 0


@dataclass
class Dashboard:
    app: FastAPI
    transport: httpx.ASGITransport
    service: httpx.AsyncClient
    seeded: Seeded
    engine: AsyncEngine
    clock: ManualClock

    def browser(self, base_url: str = "http://app.test") -> httpx.AsyncClient:
        """A client with its own cookie jar and no Authorization header: a person's browser."""
        return httpx.AsyncClient(transport=self.transport, base_url=base_url)

    def with_bearer(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url="http://app.test",
                                 headers={"Authorization": f"Bearer {token}"})


def _iso(at: datetime) -> str:
    return at.isoformat()


async def _open(client: httpx.AsyncClient, call_sid: str, tenant: str, caller: str, at: datetime) -> None:
    response = await client.put(f"/api/conversations/{call_sid}", json={
        "tenant": tenant, "caller": caller, "started_at": _iso(at), "trace_id": f"trace-{call_sid}"})
    assert response.status_code in (200, 201), response.text


async def add_message(client: httpx.AsyncClient, call_sid: str, message_id: str, seq: int, role: str, text: str,
                      at: datetime, **extra: object) -> None:
    body = {"message_id": message_id, "role": role, "text": text, "at": _iso(at), "seq": seq, **extra}
    response = await client.post(f"/api/conversations/{call_sid}/messages", json=body)
    assert response.status_code in (200, 201), response.text


async def _end(client: httpx.AsyncClient, call_sid: str, at: datetime, duration_s: float, reason: str,
               turns: list[dict[str, float | None]]) -> None:
    usage = {"input_tokens": 1200, "output_tokens": 800,
             "input_token_details": {"text_tokens": 200, "audio_tokens": 1000, "cached_tokens": 0},
             "output_token_details": {"text_tokens": 100, "audio_tokens": 700}}
    response = await client.post(f"/api/conversations/{call_sid}/end", json={
        "end_reason": reason, "ended_at": _iso(at), "duration_s": duration_s, "usage": usage, "turns": turns})
    assert response.status_code == 200, response.text


def turn(played_ms: float | None, model_ms: float | None) -> dict[str, float | None]:
    return {"speech_stopped_to_response_ms": 40.0, "speech_stopped_to_model_audio_ms": model_ms,
            "speech_stopped_to_media_sent_ms": None if model_ms is None else model_ms + 5,
            "speech_stopped_to_played_ms": played_ms}


async def _ticket(client: httpx.AsyncClient, call_sid: str, phone: str, reason: str) -> int:
    response = await client.post("/api/tickets", json={
        "call_sid": call_sid, "kind": "callback", "phone_number": phone, "reason": reason,
        "requested_time": "tomorrow morning"})
    assert response.status_code == 201, response.text
    ticket_id: int = response.json()["id"]
    return ticket_id


async def seed_calls(client: httpx.AsyncClient, *, now: datetime = DAY) -> Seeded:
    """Writes the calls with the service token, as the voice server does."""
    s = Seeded()
    t0 = now
    await _open(client, s.acme_ended, ACME, "+14155550123", t0)
    await add_message(client, s.acme_ended, "u1", 1, "user", f"Hi, where is my order? {ACME_SECRET}",
                      t0 + timedelta(seconds=2))
    await add_message(client, s.acme_ended, "t1", 2, "tool", "lookup_order", t0 + timedelta(seconds=4),
                      name="lookup_order", arguments={"order_id": "A-991"},
                      result='{"ok": true, "status": "shipped"}', duration_ms=412.5)
    await add_message(client, s.acme_ended, "a1", 3, "assistant", "Your order A-991 shipped yesterday and",
                      t0 + timedelta(seconds=5), interrupted=True)
    await add_message(client, s.acme_ended, "u2", 4, "user", "Please call me back about a refund.",
                      t0 + timedelta(seconds=9))
    await add_message(client, s.acme_ended, "t2", 5, "tool", "issue_refund", t0 + timedelta(seconds=11),
                      name="issue_refund", arguments={"order_id": "A-991", "amount": 25},
                      result='{"ok": false, "error": "refund_service_down"}', duration_ms=1503.0)
    await add_message(client, s.acme_ended, "a2", 6, "assistant",
                      "I have opened a callback ticket; someone will call you back tomorrow.",
                      t0 + timedelta(seconds=13))
    acme_ticket = await _ticket(client, s.acme_ended, "+14155550123", "Refund for order A-991")
    await _end(client, s.acme_ended, t0 + timedelta(seconds=75), 75.0, "caller_hung_up",
               [turn(850.0, 420.0), turn(None, 300.0), turn(1700.0, 900.0)])

    await _open(client, s.acme_old, ACME, "+14155557777", t0 - timedelta(days=2))
    await add_message(client, s.acme_old, "u1", 1, "user", "What are your opening hours?",
                      t0 - timedelta(days=2) + timedelta(seconds=2))
    await add_message(client, s.acme_old, "a1", 2, "assistant", "We open at nine.",
                      t0 - timedelta(days=2) + timedelta(seconds=3))
    await _end(client, s.acme_old, t0 - timedelta(days=2) + timedelta(seconds=30), 30.0, "transferred",
               [turn(400.0, 200.0)])

    await _open(client, s.acme_live, ACME, "+14155559876", t0 + timedelta(minutes=30))
    await add_message(client, s.acme_live, "u1", 1, "user", "Hello, is anyone there?",
                      t0 + timedelta(minutes=30, seconds=1))

    await _open(client, s.globex_ended, GLOBEX, "+442071234567", t0 + timedelta(minutes=10))
    await add_message(client, s.globex_ended, "u1", 1, "user", f"My invoice is wrong {GLOBEX_SECRET}",
                      t0 + timedelta(minutes=10, seconds=2))
    await add_message(client, s.globex_ended, "t1", 2, "tool", "find_invoice", t0 + timedelta(minutes=10, seconds=3),
                      name="find_invoice", arguments={"invoice": "G-77"}, result='{"ok": true}', duration_ms=80.0)
    globex_ticket = await _ticket(client, s.globex_ended, "+442071234567", f"Invoice G-77 {GLOBEX_SECRET}")
    await _end(client, s.globex_ended, t0 + timedelta(minutes=11), 60.0, "end_call", [turn(700.0, 350.0)])
    return Seeded(acme_ticket_id=acme_ticket, globex_ticket_id=globex_ticket)


@functools.cache
def password_hash() -> str:
    """One Argon2 hash of PASSWORD for every seeded user: hashing is slow on purpose."""
    return hash_password(PASSWORD)


async def add_user(engine: AsyncEngine, email: str, tenant: str | None, role: str, *, now: datetime = DAY) -> None:
    hashed = await asyncio.to_thread(password_hash)
    async with create_session_factory(engine)() as session:
        await AccountStore(session).add_user(email=email, tenant=tenant, role=role, password_hash=hashed, now=now,
                                             actor="test")


async def create_key(engine: AsyncEngine, tenant: str, role: str, *, now: datetime = DAY) -> str:
    async with create_session_factory(engine)() as session:
        created = await AccountStore(session).create_key(tenant=tenant, role=role, name="test", now=now,
                                                         actor="test")
    return created.secret


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post("/ui/login", data={"email": email, "password": password, "csrf_token": csrf_of(form.text),
                                                "next": "/ui/calls"})

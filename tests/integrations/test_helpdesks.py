"""Callback tickets also created in Freshdesk and Zendesk (contract §9), against the fake helpdesks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard.fakes.helpdesks import FakeFreshdesk, FakeZendesk
from tests.integrations.harness import CALLER, PUBLIC_URL, integration_stack, tenant_yaml, webhook_entry
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

ENVIRON = {"ACME_WEBHOOK_SECRET": SECRET, "ACME_FRESHDESK_KEY": "fd-test-key", "ACME_ZENDESK_TOKEN": "zd-test-token"}


def helpdesks_entry(freshdesk: FakeFreshdesk, zendesk: FakeZendesk) -> str:
    return (
        f"freshdesk: {{domain: acme, api_key: '${{ACME_FRESHDESK_KEY}}', base_url: '{freshdesk.base_url}', "
        "allow_private_network: true}\n"
        f"zendesk: {{subdomain: acme, email: ops@acme.example, api_token: '${{ACME_ZENDESK_TOKEN}}', "
        f"base_url: '{zendesk.base_url}', allow_private_network: true}}\n"
    )


async def tickets_of(stack: object, call_sid: str) -> list[dict[str, object]]:
    response = await stack.client.get("/api/tickets", params={"call_sid": call_sid})  # type: ignore[attr-defined]
    tickets: list[dict[str, object]] = response.json()["tickets"]
    return tickets


async def wait_for_ticket(stack: object, call_sid: str, predicate: object, timeout_s: float = 10.0) -> dict[str, object]:
    async with asyncio.timeout(timeout_s):
        while True:
            [ticket] = await tickets_of(stack, call_sid)
            if predicate(ticket):  # type: ignore[operator]
                return ticket
            await asyncio.sleep(0.02)


async def test_a_callback_ticket_posts_ticket_created_and_creates_freshdesk_and_zendesk_tickets(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver() as receiver, FakeFreshdesk() as freshdesk, FakeZendesk() as zendesk:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[ticket.created]") + helpdesks_entry(freshdesk, zendesk))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON,
                                     SWITCHBOARD_HELPDESK_WAIT_FOR_END_S=1900) as stack:
            await stack.open_call("CA200")
            created = await stack.create_ticket("CA200")
            [webhook] = await receiver.wait_for(1)
            # Told to, the helpdesk copies wait for the call's end, so they carry all of it.
            await asyncio.sleep(0.2)
            assert freshdesk.requests == [] and zendesk.requests == []
            await stack.end_call("CA200")
            ticket = await wait_for_ticket(stack, "CA200", lambda t: len(t["external"]) == 2)

    assert webhook.is_verified and webhook.payload["data"]["ticket"] == created
    assert sorted(ticket["external"], key=lambda e: e["system"]) == [  # type: ignore[arg-type, index]
        {"system": "freshdesk", "id": "1", "url": f"{freshdesk.base_url}/a/tickets/1"},
        {"system": "zendesk", "id": "1", "url": f"{zendesk.base_url}/agent/tickets/1"},
    ]
    assert ticket["integration_errors"] == []

    [fd_request] = freshdesk.creates()
    fd_body = fd_request.json()
    assert fd_request.auth == ("fd-test-key", "X")
    assert fd_body["phone"] == CALLER and fd_body["source"] == 3 and fd_body["status"] == 2
    assert CALLER in fd_body["subject"]
    for text in ("Refund for order 42", "tomorrow after 3pm", "Caller: Please call me back about my refund.",
                 f"{PUBLIC_URL}/ui/calls/CA200"):
        assert text in fd_body["description"]

    [zd_request] = zendesk.creates()
    zd_ticket = zd_request.json()["ticket"]
    assert zd_request.auth == ("ops@acme.example/token", "zd-test-token")
    assert zd_request.headers["idempotency-key"].startswith("switchboard:msg_")
    assert CALLER in zd_ticket["subject"] and zd_ticket["comment"]["public"] is False
    for text in (CALLER, "Refund for order 42", "tomorrow after 3pm", "Agent: Thanks for calling Acme.",
                 f"{PUBLIC_URL}/ui/calls/CA200"):
        assert text in zd_ticket["comment"]["body"]


async def test_a_helpdesk_answering_429_with_retry_after_2_is_retried_after_2_s(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeFreshdesk() as freshdesk, FakeZendesk() as zendesk:
        freshdesk.answer_next(429, {"message": "You have exceeded the limit of requests per minute"},
                              {"Retry-After": "2"})
        zendesk.answer_next(429, b"Too Many Requests", {"Retry-After": "2"})
        async with integration_stack(database_url, tmp_path, tenant_yaml(helpdesks_entry(freshdesk, zendesk)),
                                     environ=ENVIRON) as stack:
            freshdesk.wall = zendesk.wall = stack.clock.wall
            await stack.open_call("CA201")
            await stack.create_ticket("CA201")
            await stack.end_call("CA201")
            await wait_for_ticket(stack, "CA201", lambda t: len(t["integration_errors"]) == 2)
            await stack.advance(1.9)
            await asyncio.sleep(0.3)
            assert len(freshdesk.creates()) == 1 and len(zendesk.creates()) == 1
            await stack.advance(0.1)
            ticket = await wait_for_ticket(stack, "CA201", lambda t: len(t["external"]) == 2)

    for helpdesk in (freshdesk, zendesk):
        first, second = helpdesk.creates()
        assert (first.status_code, second.status_code) == (429, 201)
        assert 2.0 <= (second.at - first.at).total_seconds() < 2.5
    assert ticket["integration_errors"] == []


async def test_a_helpdesk_timing_out_after_creating_the_ticket_does_not_end_with_two(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeFreshdesk() as freshdesk, FakeZendesk() as zendesk:
        freshdesk.stall_after_create(5.0)
        zendesk.stall_after_create(5.0)
        async with integration_stack(database_url, tmp_path, tenant_yaml(helpdesks_entry(freshdesk, zendesk)),
                                     environ=ENVIRON, SWITCHBOARD_DELIVERY_TIMEOUT_S=0.5) as stack:
            await stack.open_call("CA202")
            await stack.create_ticket("CA202")
            await stack.end_call("CA202")
            retrying = await wait_for_ticket(stack, "CA202", lambda t: len(t["integration_errors"]) == 2)
            await stack.advance(10.0)
            ticket = await wait_for_ticket(stack, "CA202", lambda t: len(t["external"]) == 2)

    assert {e["error"] for e in retrying["integration_errors"]} == {  # type: ignore[union-attr, index]
        "freshdesk: no answer within 0.5 s", "zendesk: no answer within 0.5 s"}
    assert len(freshdesk.tickets) == 1 and len(zendesk.tickets) == 1
    # Freshdesk: the retry looked for the ticket by its tag before creating; Zendesk: same key, same answer.
    assert [r.method for r in freshdesk.requests] == ["POST", "GET"]
    first, second = zendesk.creates()
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] and first.body == second.body
    assert sorted((e["system"], e["id"]) for e in ticket["external"]) == [  # type: ignore[union-attr, index]
        ("freshdesk", "1"), ("zendesk", "1")]


async def test_a_helpdesk_refusal_is_visible_on_the_ticket_with_its_error_text(
    database_url: str, tmp_path: Path
) -> None:
    environ = {**ENVIRON, "ACME_FRESHDESK_KEY": "wrong-key"}
    async with FakeFreshdesk() as freshdesk, FakeZendesk() as zendesk:
        zendesk.answer_next(422, {"error": "RecordInvalid", "description": "Record validation errors", "details": {
            "requester": [{"description": "Requester: Phone is invalid", "error": "InvalidValue"}]}})
        async with integration_stack(database_url, tmp_path, tenant_yaml(helpdesks_entry(freshdesk, zendesk)),
                                     environ=environ) as stack:
            await stack.open_call("CA203")
            await stack.create_ticket("CA203")  # the call goes on: by default the helpdesks hear at once
            first = await wait_for_ticket(stack, "CA203", lambda t: len(t["integration_errors"]) == 2)
            for _ in range(2):
                await stack.advance(40.0)
            final = await wait_for_ticket(
                stack, "CA203", lambda t: any(e["status"] == "failed" for e in t["integration_errors"])
            )

    errors = {e["system"]: e for e in first["integration_errors"]}  # type: ignore[union-attr, index]
    assert errors["freshdesk"]["status"] == "retrying"
    assert errors["freshdesk"]["error"] == "freshdesk: 401 You have to be logged in to perform this action."
    assert errors["zendesk"]["error"] == (
        "zendesk: 422 RecordInvalid: Record validation errors; requester: Requester: Phone is invalid (InvalidValue)"
    )
    # Zendesk took the ticket on its retry; Freshdesk kept refusing and was given up, visibly.
    assert [(e["system"], e["id"]) for e in final["external"]] == [("zendesk", "1")]  # type: ignore[union-attr, index]
    [failed] = final["integration_errors"]  # type: ignore[misc]
    assert failed["system"] == "freshdesk" and failed["status"] == "failed"  # type: ignore[index]
    assert "401 You have to be logged in" in failed["error"]  # type: ignore[index, operator]
    assert len(freshdesk.creates()) == 3 and freshdesk.tickets == []

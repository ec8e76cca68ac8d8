"""A Zendesk callback ticket is requested by the caller's own end user: one per phone number, carrying it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from switchboard.fakes.helpdesks import FakeZendesk
from switchboard.tickets.database import create_engine, create_session_factory
from switchboard.tickets.integrations.models import IntegrationDelivery
from tests.integrations.harness import CALLER, integration_stack, tenant_yaml
from tests.integrations.test_helpdesks import ENVIRON, wait_for_ticket

OTHER_CALLER = "+15550001111"


def zendesk_entry(zendesk: FakeZendesk) -> str:
    return (
        f"zendesk: {{subdomain: acme, email: ops@acme.example, api_token: '${{ACME_ZENDESK_TOKEN}}', "
        f"base_url: '{zendesk.base_url}', allow_private_network: true}}\n"
    )


def is_linked(ticket: dict[str, object]) -> bool:
    return len(ticket["external"]) == 1  # type: ignore[arg-type]


async def test_callbacks_from_one_number_share_one_zendesk_user_who_has_the_phone(
    database_url: str, tmp_path: Path
) -> None:
    linked = []
    async with (
        FakeZendesk() as zendesk,
        integration_stack(database_url, tmp_path, tenant_yaml(zendesk_entry(zendesk)), environ=ENVIRON) as stack,
    ):
        # The same caller twice (the second time written with spaces and brackets), then someone else.
        for call_sid, number in (("CA300", CALLER), ("CA301", "+1 (555) 765-4321"), ("CA302", OTHER_CALLER)):
            await stack.open_call(call_sid)
            await stack.create_ticket(call_sid, phone_number=number)
            linked.append(await wait_for_ticket(stack, call_sid, is_linked))

    caller, other = zendesk.end_users()
    assert len(zendesk.end_users()) == 2
    assert (caller["name"], caller["phone"], caller["external_id"], caller["role"]) == (
        f"Caller {CALLER}", CALLER, f"switchboard-phone:{CALLER}", "end-user")
    assert (other["phone"], other["external_id"]) == (OTHER_CALLER, f"switchboard-phone:{OTHER_CALLER}")

    # On the wire: each ticket names its requester by id, and nothing else about the requester.
    sent = [r.json()["ticket"] for r in zendesk.creates()]
    assert [t["requester_id"] for t in sent] == [caller["id"], caller["id"], other["id"]]
    assert all("requester" not in t for t in sent)
    assert [t["requester_id"] for t in zendesk.tickets] == [caller["id"], caller["id"], other["id"]]

    # The first callback looked the caller up and created it; the second only looked; the third created another.
    steps = [(r.method, r.path, r.query, r.status_code) for r in zendesk.user_requests()]
    assert steps == [
        ("GET", "/api/v2/users/search.json", {"external_id": f"switchboard-phone:{CALLER}"}, 200),
        ("POST", "/api/v2/users/create_or_update.json", {}, 201),
        ("GET", "/api/v2/users/search.json", {"external_id": f"switchboard-phone:{CALLER}"}, 200),
        ("GET", "/api/v2/users/search.json", {"external_id": f"switchboard-phone:{OTHER_CALLER}"}, 200),
        ("POST", "/api/v2/users/create_or_update.json", {}, 201),
    ]
    created = zendesk.user_requests()[1]
    assert created.json() == {"user": {"name": f"Caller {CALLER}", "phone": CALLER,
                                       "external_id": f"switchboard-phone:{CALLER}"}}
    assert created.auth == ("ops@acme.example/token", "zd-test-token")
    assert created.headers["content-type"] == "application/json"

    # The ticket link is what it was.
    assert [t["external"] for t in linked] == [
        [{"system": "zendesk", "id": str(n), "url": f"{zendesk.base_url}/agent/tickets/{n}"}] for n in (1, 2, 3)
    ]
    assert all(t["integration_errors"] == [] for t in linked)


async def test_the_requester_step_answering_429_is_retried_after_its_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeZendesk() as zendesk:
        zendesk.answer_next(429, b"Too Many Requests", {"Retry-After": "2"}, route="users/search")
        async with integration_stack(database_url, tmp_path, tenant_yaml(zendesk_entry(zendesk)),
                                     environ=ENVIRON) as stack:
            zendesk.wall = stack.clock.wall
            await stack.open_call("CA310")
            await stack.create_ticket("CA310")
            throttled = await wait_for_ticket(stack, "CA310", lambda t: len(t["integration_errors"]) == 1)
            await stack.advance(1.9)
            assert len(zendesk.user_requests()) == 1 and zendesk.creates() == []
            await stack.advance(0.1)
            ticket = await wait_for_ticket(stack, "CA310", is_linked)

    [error] = throttled["integration_errors"]  # type: ignore[misc]
    assert (error["system"], error["status"]) == ("zendesk", "retrying")  # type: ignore[index]
    assert error["error"] == "zendesk: requester: 429 Too Many Requests"  # type: ignore[index]
    first, second, created = zendesk.user_requests()
    assert (first.status_code, second.status_code, created.status_code) == (429, 200, 201)
    assert 2.0 <= (second.at - first.at).total_seconds() < 2.5
    [user] = zendesk.end_users()
    [sent] = zendesk.creates()
    assert sent.json()["ticket"]["requester_id"] == user["id"] and sent.status_code == 201
    assert ticket["integration_errors"] == []
    assert ticket["external"] == [{"system": "zendesk", "id": "1", "url": f"{zendesk.base_url}/agent/tickets/1"}]


async def test_a_requester_step_answering_500_is_visible_on_the_ticket_and_no_ticket_is_sent_until_the_retry(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeZendesk() as zendesk:
        zendesk.answer_next(500, {"error": "InternalError", "description": "Something went wrong"},
                            route="users/create_or_update")
        async with integration_stack(database_url, tmp_path, tenant_yaml(zendesk_entry(zendesk)),
                                     environ=ENVIRON) as stack:
            await stack.open_call("CA320")
            await stack.create_ticket("CA320")
            refused = await wait_for_ticket(stack, "CA320", lambda t: len(t["integration_errors"]) == 1)
            assert zendesk.creates() == []
            await stack.advance(40.0)
            ticket = await wait_for_ticket(stack, "CA320", is_linked)

    [error] = refused["integration_errors"]  # type: ignore[misc]
    assert (error["system"], error["status"]) == ("zendesk", "retrying")  # type: ignore[index]
    assert error["error"] == "zendesk: requester: 500 InternalError: Something went wrong"  # type: ignore[index]
    # The retry created the user, then the ticket, once.
    assert [r.status_code for r in zendesk.user_requests()] == [200, 500, 200, 201]
    [user] = zendesk.end_users()
    [sent] = zendesk.creates()
    assert sent.json()["ticket"]["requester_id"] == user["id"]
    assert ticket["integration_errors"] == []


@pytest.mark.parametrize(("route", "status_code", "body"), [
    ("users/create_or_update", 422, {"error": "RecordInvalid", "description": "Record validation errors", "details": {
        "phone": [{"description": "Phone: is already being used by another user", "error": "DuplicateValue"}]}}),
    ("users/search", 403, {"error": "Forbidden", "description": "You do not have access to this page."}),
], ids=["number-refused", "may-not-manage-users"])
async def test_a_requester_step_refused_for_good_still_sends_the_ticket_requested_by_name(
    database_url: str, tmp_path: Path, route: str, status_code: int, body: dict[str, object]
) -> None:
    """The callback reaches the helpdesk anyway, requested by name as before requesters were looked up."""
    async with FakeZendesk() as zendesk:
        zendesk.answer_next(status_code, body, route=route)
        async with integration_stack(database_url, tmp_path, tenant_yaml(zendesk_entry(zendesk)),
                                     environ=ENVIRON) as stack:
            await stack.open_call("CA321")
            await stack.create_ticket("CA321")
            ticket = await wait_for_ticket(stack, "CA321", is_linked)

    [sent] = zendesk.creates()
    assert sent.status_code == 201
    assert sent.json()["ticket"]["requester"] == {"name": f"Caller {CALLER}"}
    assert "requester_id" not in sent.json()["ticket"]
    assert zendesk.user_requests()[-1].status_code == status_code
    assert ticket["integration_errors"] == []
    assert ticket["external"] == [{"system": "zendesk", "id": "1", "url": f"{zendesk.base_url}/agent/tickets/1"}]


async def test_a_delivery_kept_before_requesters_were_looked_up_is_sent_as_it_was(
    database_url: str, tmp_path: Path
) -> None:
    """A row written by the previous version (a `requester` object, no `user`) still goes out unchanged."""
    legacy = {"ticket": {"subject": f"Callback request from {CALLER}", "comment": {"body": "Reason: refund",
              "public": False}, "requester": {"name": f"Caller {CALLER}"}, "priority": "normal",
              "tags": ["switchboard", "callback"], "external_id": "switchboard-ticket-1"}}
    async with FakeZendesk() as zendesk:
        zendesk.answer_next(503, b"Service Unavailable", {"Retry-After": "5"}, route="users/search")
        async with integration_stack(database_url, tmp_path, tenant_yaml(zendesk_entry(zendesk)),
                                     environ=ENVIRON) as stack:
            await stack.open_call("CA330")
            await stack.create_ticket("CA330")
            await wait_for_ticket(stack, "CA330", lambda t: len(t["integration_errors"]) == 1)
            engine = create_engine(database_url)
            try:
                async with create_session_factory(engine)() as session, session.begin():
                    await session.execute(update(IntegrationDelivery).values(
                        request_body=json.dumps(legacy, separators=(",", ":"))))
            finally:
                await engine.dispose()
            await stack.advance(5.0)
            ticket = await wait_for_ticket(stack, "CA330", is_linked)

    [sent] = zendesk.creates()
    assert sent.json() == legacy and sent.status_code == 201
    assert [r.status_code for r in zendesk.user_requests()] == [503]
    assert ticket["external"] == [{"system": "zendesk", "id": "1", "url": f"{zendesk.base_url}/agent/tickets/1"}]

"""The fake Freshdesk and Zendesk answer as the real ones do: checked with their maintained Python clients.

python-freshdesk 1.3.9 and zenpy 2.0.57 (pinned in the test extra) are synchronous (requests), so
they run in a thread against the fakes on 127.0.0.1. Pointing them at a fake is done as the protocols
addendum (D.6, E.5) describes: python-freshdesk's URL prefix is replaced after construction, zenpy
reads ZENPY_FORCE_NETLOC / ZENPY_FORCE_SCHEME.
"""

from __future__ import annotations

import asyncio

import pytest
from freshdesk.v2.api import API as FreshdeskAPI
from freshdesk.v2.errors import FreshdeskBadRequest, FreshdeskRateLimited, FreshdeskUnauthorized
from requests import HTTPError
from zenpy import Zenpy
from zenpy.lib.api_objects import Comment, Ticket, User
from zenpy.lib.exception import APIException

from switchboard.fakes.helpdesks import FakeFreshdesk, FakeZendesk


def freshdesk_client(fake: FakeFreshdesk, api_key: str = "fd-test-key") -> FreshdeskAPI:
    client = FreshdeskAPI("acme.freshdesk.com", api_key)
    client._api_prefix = fake.base_url + "/api/v2/"  # the client hard-codes https://<domain>
    return client


async def test_python_freshdesk_creates_finds_and_reads_a_ticket_on_the_fake() -> None:
    async with FakeFreshdesk() as fake:
        client = freshdesk_client(fake)
        created = await asyncio.to_thread(
            client.tickets.create_ticket, "Callback request from +15557654321",
            description="<p>Reason: refund</p>", phone="+15557654321", name="Caller +15557654321",
            source=3, status=2, priority=2, tags=["switchboard", "sb-0123"],
        )
        found = await asyncio.to_thread(client.tickets.filter_tickets, query="tag:'sb-0123'")
        fetched = await asyncio.to_thread(client.tickets.get_ticket, created.id)

    assert created.id == 1 and created.subject == "Callback request from +15557654321"
    assert created.source == "phone" and created.status == "open" and created.priority == "medium"
    assert [t.id for t in found] == [1] and fetched.id == 1
    assert fake.requests[0].auth == ("fd-test-key", "unused_with_api_key")


async def test_python_freshdesk_reads_the_fakes_errors_as_freshdesks() -> None:
    async with FakeFreshdesk() as fake:
        client = freshdesk_client(fake)
        with pytest.raises(FreshdeskBadRequest) as bad:
            await asyncio.to_thread(client.tickets.create_ticket, "No requester", description="x")
        with pytest.raises(FreshdeskUnauthorized) as unauthorized:
            await asyncio.to_thread(freshdesk_client(fake, "wrong").tickets.create_ticket, "x",
                                    description="x", email="a@example.com")
        fake.answer_next(429, {"message": "rate limited"}, {"Retry-After": "7"})
        with pytest.raises(FreshdeskRateLimited) as limited:
            await asyncio.to_thread(client.tickets.create_ticket, "x", description="x", email="a@example.com")

    assert "Validation failed" in str(bad.value) and "missing_field" in str(bad.value)
    assert "You have to be logged in" in str(unauthorized.value)
    assert "until 7 seconds" in str(limited.value)


@pytest.fixture
def zenpy_at(monkeypatch: pytest.MonkeyPatch) -> object:
    def point(fake: FakeZendesk) -> Zenpy:
        monkeypatch.setenv("ZENPY_FORCE_NETLOC", fake.base_url.removeprefix("http://"))
        monkeypatch.setenv("ZENPY_FORCE_SCHEME", "http")
        return Zenpy(subdomain="acme", email="ops@acme.example", token="zd-test-token")

    return point


async def test_zenpy_creates_and_reads_a_ticket_on_the_fake(zenpy_at: object) -> None:
    async with FakeZendesk() as fake:
        client = zenpy_at(fake)  # type: ignore[operator]
        ticket = Ticket(subject="Callback request", comment=Comment(body="Reason: refund", public=False),
                        requester=User(name="Caller +15557654321"), priority="normal", external_id="switchboard-ticket-1")
        audit = await asyncio.to_thread(client.tickets.create, ticket)
        fetched = await asyncio.to_thread(client.tickets, id=audit.ticket.id)

    assert audit.ticket.id == 1 and audit.ticket.subject == "Callback request"
    assert fetched.external_id == "switchboard-ticket-1" and fetched.description == "Reason: refund"
    assert fake.requests[0].auth == ("ops@acme.example/token", "zd-test-token")
    assert fake.requests[0].json()["ticket"]["comment"] == {"body": "Reason: refund", "public": False}


async def test_zenpy_reads_the_fakes_errors_as_zendesks(zenpy_at: object) -> None:
    async with FakeZendesk() as fake:
        client = zenpy_at(fake)  # type: ignore[operator]
        with pytest.raises(APIException) as invalid:
            await asyncio.to_thread(client.tickets.create, Ticket(subject="No description"))
        fake.api_token = "rotated"
        with pytest.raises(APIException) as unauthorized:
            await asyncio.to_thread(client.tickets.create, Ticket(subject="x", comment=Comment(body="x")))

    assert "RecordInvalid" in str(invalid.value) and "Description: cannot be blank" in str(invalid.value)
    assert invalid.value.response.status_code == 422
    assert unauthorized.value.response.status_code == 401


async def test_zenpy_finds_or_creates_an_end_user_by_external_id_on_the_fake(zenpy_at: object) -> None:
    async with FakeZendesk() as fake:
        client = zenpy_at(fake)  # type: ignore[operator]
        # zenpy writes query values unencoded, so this id has no "+" (it would arrive as a space).
        created = await asyncio.to_thread(
            client.users.create_or_update, User(name="Caller 15557654321", phone="+15557654321", external_id="crm-42"))
        again = await asyncio.to_thread(
            client.users.create_or_update, User(name="Caller again", phone="+15550000000", external_id="CRM-42"))
        found = list(await asyncio.to_thread(client.users.search, external_id="crm-42"))
        none = list(await asyncio.to_thread(client.users.search, external_id="crm-43"))
        audit = await asyncio.to_thread(client.tickets.create, Ticket(
            subject="Callback request", comment=Comment(body="Reason: refund", public=False), requester_id=created.id))

    assert again.id == created.id and [u.id for u in found] == [created.id] and none == []
    assert [r.status_code for r in fake.user_requests()] == [201, 200, 200, 200]
    assert fake.user_requests()[0].path == "/api/v2/users/create_or_update.json"
    assert fake.user_requests()[0].json() == {
        "user": {"name": "Caller 15557654321", "phone": "+15557654321", "external_id": "crm-42"}}
    # An update renames and takes the external id's case; the first phone stays the user's phone.
    assert (again.name, again.phone, again.external_id, again.role) == ("Caller again", "+15557654321", "CRM-42",
                                                                         "end-user")
    assert audit.ticket.requester_id == created.id and len(fake.end_users()) == 1


async def test_zenpy_reads_the_fakes_user_errors_as_zendesks(zenpy_at: object) -> None:
    async with FakeZendesk() as fake:
        client = zenpy_at(fake)  # type: ignore[operator]
        with pytest.raises(APIException) as nameless:
            await asyncio.to_thread(client.users.create_or_update, User(phone="+15557654321", external_id="crm-1"))
        with pytest.raises(APIException) as unknown_requester:
            await asyncio.to_thread(client.tickets.create, Ticket(subject="x", comment=Comment(body="x"),
                                                                  requester_id=424242))
        fake.answer_next(429, b"Too Many Requests", {"Retry-After": "0"}, route="users/search")
        with pytest.raises(HTTPError) as limited:
            await asyncio.to_thread(lambda: list(client.users.search(external_id="crm-1")))

    assert nameless.value.response.status_code == 422 and "BlankValue" in str(nameless.value)
    assert unknown_requester.value.response.status_code == 422 and "requester_id" in str(unknown_requester.value)
    # A text/plain 429 reaches zenpy as requests' HTTPError (with "Retry-After: 0" it does not wait).
    assert limited.value.response.status_code == 429
    assert [r.status_code for r in fake.user_requests()] == [422, 429]
    assert fake.end_users() == [] and fake.tickets == []

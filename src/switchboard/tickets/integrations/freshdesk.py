"""Freshdesk API v2: create a callback ticket (`POST /api/v2/tickets`, source phone), basic auth `api_key:X`.

Freshdesk has no idempotency key (protocols addendum D.5). Each ticket carries a tag unique to its
delivery; when an earlier attempt may have reached Freshdesk (timeout, dropped answer, 5xx), the
retry first searches for that tag (`GET /api/v2/search/tickets?query="tag:'…'"`) and, if a ticket is
found, records it instead of creating a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from switchboard.outbound_http import MissingVariable, Resolver, expand_variables
from switchboard.tickets.integrations.config import FreshdeskAccount
from switchboard.tickets.integrations.helpdesk_ticket import CallbackDetails
from switchboard.tickets.integrations.policy import AttemptResult
from switchboard.tickets.integrations.transport import (
    HttpAnswer,
    OutboundFailure,
    answer_text,
    not_sent,
    refused,
    send,
    unconfigured,
)

SOURCE_PHONE = 3
STATUS_OPEN = 2
PRIORITY_MEDIUM = 2


def dedupe_tag(message_id: str) -> str:
    return "sb-" + message_id.removeprefix("msg_")[:24]


def ticket_request(details: CallbackDetails, message_id: str) -> dict[str, Any]:
    return {
        "subject": details.subject,
        "description": details.html(),
        "phone": details.phone_number,
        # Freshdesk wants a name with a phone-only requester.
        "name": f"Caller {details.phone_number}",
        "status": STATUS_OPEN,
        "priority": PRIORITY_MEDIUM,
        "source": SOURCE_PHONE,
        "tags": ["switchboard", "callback", dedupe_tag(message_id)],
    }


def error_text(answer: HttpAnswer) -> str:
    """`400 Validation failed: phone: It should be ... (invalid_value)`, from Freshdesk's error body."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return f"{answer.status_code} {answer_text(answer, 200)}".strip()
    if not isinstance(body, dict):
        return f"{answer.status_code} {answer_text(answer, 200)}".strip()
    parts = [str(body.get("description") or body.get("message") or body.get("code") or "")]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(f"{error.get('field', '')}: {error.get('message', '')} ({error.get('code', '')})")
    return f"{answer.status_code} " + "; ".join(p for p in parts if p)


def ticket_url(account: FreshdeskAccount, ticket_id: str) -> str:
    return f"{account.api_base_url}/a/tickets/{ticket_id}"


async def create_ticket(
    client: httpx.AsyncClient, account: FreshdeskAccount, *, request_body: bytes, message_id: str,
    look_first: bool, environ: Mapping[str, str], resolver: Resolver, timeout_s: float,
) -> AttemptResult:
    try:
        auth = (expand_variables(account.api_key, environ), "X")
    except MissingVariable as exc:
        return unconfigured(exc)
    base = account.api_base_url + "/api/v2"
    common = {"allow_private_network": account.allow_private_network, "timeout_s": timeout_s, "resolver": resolver,
              "auth": auth}
    try:
        if look_first:
            found = await send(
                client, "GET", base + "/search/tickets", headers={}, content=None,
                params={"query": f"\"tag:'{dedupe_tag(message_id)}'\""}, **common,  # type: ignore[arg-type]
            )
            existing = _first_result(found)
            if existing is not None:
                return AttemptResult(found.status_code, external_id=existing,
                                     external_url=ticket_url(account, existing))
        answer = await send(
            client, "POST", base + "/tickets", headers={"content-type": "application/json"}, content=request_body,
            **common,  # type: ignore[arg-type]
        )
    except OutboundFailure as exc:
        return not_sent(exc, "freshdesk: ")
    if 200 <= answer.status_code < 300:
        try:
            ticket_id = str(json.loads(answer.body)["id"])
        except (ValueError, KeyError, TypeError):
            return AttemptResult(502, error="freshdesk: the answer had no ticket id", is_ambiguous=True)
        return AttemptResult(answer.status_code, external_id=ticket_id, external_url=ticket_url(account, ticket_id))
    return refused(answer, "freshdesk: " + error_text(answer))


def _first_result(answer: HttpAnswer) -> str | None:
    if answer.status_code != 200:
        return None
    try:
        results = json.loads(answer.body)["results"]
        return str(results[0]["id"]) if results else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None

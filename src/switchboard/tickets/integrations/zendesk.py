"""Zendesk Support API: create a callback ticket (`POST /api/v2/tickets.json`), API-token auth.

Retries are made safe with Zendesk's own idempotency (protocols addendum E.3): every attempt of a
delivery sends the same `Idempotency-Key` (the delivery's id) and the same body, so a retry after a
timeout gets the ticket the first attempt created. Keys live 2 hours at Zendesk; `external_id`
(`switchboard-ticket-<id>`) also links the ticket to ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from switchboard.outbound_http import MissingVariable, Resolver, expand_variables
from switchboard.tickets.integrations.config import ZendeskAccount
from switchboard.tickets.integrations.helpdesk_ticket import CallbackDetails
from switchboard.tickets.integrations.policy import AttemptResult, parse_retry_after
from switchboard.tickets.integrations.transport import HttpAnswer, OutboundFailure, answer_text, send


def ticket_request(details: CallbackDetails) -> dict[str, Any]:
    return {
        "ticket": {
            "subject": details.subject,
            "comment": {"body": details.text(), "public": False},
            "requester": {"name": f"Caller {details.phone_number}"},
            "priority": "normal",
            "tags": ["switchboard", "callback"],
            "external_id": f"switchboard-ticket-{details.ticket_id}",
        }
    }


def error_text(answer: HttpAnswer) -> str:
    """`422 RecordInvalid: Record validation errors; requester: ... (InvalidValue)` from Zendesk's body."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return f"{answer.status_code} {answer_text(answer, 200)}".strip()
    if not isinstance(body, dict):
        return f"{answer.status_code} {answer_text(answer, 200)}".strip()
    error = body.get("error")
    if isinstance(error, dict):  # some endpoints nest {"title", "message"}
        error = error.get("title") or error.get("message")
    parts = [": ".join(str(p) for p in (error, body.get("description")) if p)]
    details = body.get("details")
    if isinstance(details, dict):
        for field, problems in details.items():
            for problem in problems if isinstance(problems, list) else []:
                if isinstance(problem, dict):
                    parts.append(f"{field}: {problem.get('description', '')} ({problem.get('error', '')})")
    return f"{answer.status_code} " + "; ".join(p for p in parts if p)


def ticket_url(account: ZendeskAccount, ticket_id: str) -> str:
    return f"{account.api_base_url}/agent/tickets/{ticket_id}"


async def create_ticket(
    client: httpx.AsyncClient, account: ZendeskAccount, *, request_body: bytes, message_id: str,
    environ: Mapping[str, str], resolver: Resolver, timeout_s: float,
) -> AttemptResult:
    try:
        auth = (f"{expand_variables(account.email, environ)}/token", expand_variables(account.api_token, environ))
    except MissingVariable as exc:
        return AttemptResult(None, error=f"the App server has no environment variable {exc.name}",
                             is_configuration_error=True)
    try:
        answer = await send(
            client, "POST", account.api_base_url + "/api/v2/tickets.json",
            headers={"content-type": "application/json", "idempotency-key": f"switchboard:{message_id}"},
            content=request_body, allow_private_network=account.allow_private_network, timeout_s=timeout_s,
            resolver=resolver, auth=auth,
        )
    except OutboundFailure as exc:
        return AttemptResult(None, error=f"zendesk: {exc}", is_ambiguous=exc.is_ambiguous,
                             is_configuration_error=exc.is_refused)
    if 200 <= answer.status_code < 300:
        try:
            ticket_id = str(json.loads(answer.body)["ticket"]["id"])
        except (ValueError, KeyError, TypeError):
            return AttemptResult(502, error="zendesk: the answer had no ticket id", is_ambiguous=True)
        return AttemptResult(answer.status_code, external_id=ticket_id, external_url=ticket_url(account, ticket_id))
    return AttemptResult(
        answer.status_code, error="zendesk: " + error_text(answer),
        retry_after_s=parse_retry_after(answer.headers.get("retry-after")), is_ambiguous=answer.status_code >= 500,
    )

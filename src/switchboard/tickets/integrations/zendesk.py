"""Zendesk Support API: create a callback ticket requested by the caller's own end user, API-token auth.

An attempt first finds the caller's end user by a stable `external_id` derived from the phone number
(`switchboard-phone:+15551234567`): `GET /api/v2/users/search.json?external_id=…`, and only when there is
none, `POST /api/v2/users/create_or_update.json` with name, phone and that `external_id` (Zendesk matches
an existing user by `external_id` or e-mail: 200 updated, 201 created; either way `{"user": {"id"}}`).
A user found is left as the agents edited it. Then `POST /api/v2/tickets.json` with `requester_id`, so
one caller's callbacks share one Zendesk user who carries the phone number.

Retries are made safe with Zendesk's own idempotency (protocols addendum E.3): every attempt of a
delivery sends the same `Idempotency-Key` (the delivery's id) and the same ticket body (the requester
step is idempotent by `external_id`, so `requester_id` comes out the same), and a retry after a timeout
gets the ticket the first attempt created. Keys live 2 hours at Zendesk; `external_id`
(`switchboard-ticket-<id>`) also links the ticket to ours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from switchboard.logs import get_logger
from switchboard.outbound_http import MissingVariable, Resolver, expand_variables
from switchboard.tickets.integrations.config import ZendeskAccount
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

REQUESTER_PREFIX = "switchboard-phone:"
# The requester step refused for good (the API user may not manage end users; the number is already another
# user's, or Zendesk rejects it): the ticket goes out requested by name, as before requesters were looked up,
# rather than the callback never reaching the helpdesk. A 429 or a 5xx is retried as usual.
FALL_BACK_ON = frozenset({403, 422})
log = get_logger("switchboard.tickets.integrations")


def normalized_phone(phone_number: str) -> str:
    """`+1 (555) 123-4567` -> `+15551234567`: the digits, and the leading `+` if there was one."""
    digits = "".join(c for c in phone_number if c.isdigit())
    return ("+" if phone_number.strip().startswith("+") else "") + digits


def ticket_request(details: CallbackDetails) -> dict[str, Any]:
    """What a delivery sends, kept on its row: `user` (the requester to find or create) and `ticket`
    (sent as `{"ticket": {..., "requester_id": <the user's id>}}`)."""
    phone = normalized_phone(details.phone_number)
    return {
        # No role: a new user is an end user by default, and a matched one keeps whatever role it has.
        "user": {"name": f"Caller {phone}", "phone": phone, "external_id": REQUESTER_PREFIX + phone},
        "ticket": {
            "subject": details.subject,
            "comment": {"body": details.text(), "public": False},
            "priority": "normal",
            "tags": ["switchboard", "callback"],
            "external_id": f"switchboard-ticket-{details.ticket_id}",
        },
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
        return unconfigured(exc)
    planned = json.loads(request_body)
    base = account.api_base_url + "/api/v2"
    common = {"allow_private_network": account.allow_private_network, "timeout_s": timeout_s, "resolver": resolver,
              "auth": auth}
    step = "requester: "
    try:
        if "user" in planned:
            requester = await _find_or_create_requester(client, base, planned["user"], common)
            if isinstance(requester, AttemptResult):
                if requester.status_code not in FALL_BACK_ON:
                    return requester
                # The callback must reach the helpdesk: requested by name, as Zendesk takes any ticket.
                log.warning("zendesk.requester_by_name", status_code=requester.status_code,
                            error=(requester.error or "")[:200])
                ticket_body = _json_bytes({"ticket": {**planned["ticket"],
                                                      "requester": {"name": planned["user"]["name"]}}})
            else:
                ticket_body = _json_bytes({"ticket": {**planned["ticket"], "requester_id": requester}})
        else:  # kept on its row before requesters were looked up: sent as it was
            ticket_body = request_body
        step = ""
        answer = await send(
            client, "POST", base + "/tickets.json",
            headers={"content-type": "application/json", "idempotency-key": f"switchboard:{message_id}"},
            content=ticket_body, **common,  # type: ignore[arg-type]
        )
    except OutboundFailure as exc:
        return not_sent(exc, f"zendesk: {step}")
    if 200 <= answer.status_code < 300:
        try:
            ticket_id = str(json.loads(answer.body)["ticket"]["id"])
        except (ValueError, KeyError, TypeError):
            return AttemptResult(502, error="zendesk: the answer had no ticket id", is_ambiguous=True)
        return AttemptResult(answer.status_code, external_id=ticket_id, external_url=ticket_url(account, ticket_id))
    return _refused(answer, "")


async def _find_or_create_requester(
    client: httpx.AsyncClient, base: str, user: dict[str, Any], common: Mapping[str, Any],
) -> int | AttemptResult:
    """The id of the end user with `user["external_id"]`, created if there is none; or why not.

    Raises:
        OutboundFailure: as `send`.
    """
    external_id = str(user["external_id"])
    found = await send(client, "GET", base + "/users/search.json", headers={"accept": "application/json"},
                       content=None, params={"external_id": external_id}, **common)
    if found.status_code != 200:
        return _refused(found, "requester: ")
    try:
        users = json.loads(found.body)["users"]
        # Zendesk compares external ids case-insensitively (Create Or Update User).
        match = next((u for u in users if str(u.get("external_id") or "").casefold() == external_id.casefold()), None)
        if match is not None:
            return int(match["id"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return AttemptResult(502, error="zendesk: requester: the search answer had no users", is_ambiguous=True)
    answer = await send(client, "POST", base + "/users/create_or_update.json",
                        headers={"content-type": "application/json"}, content=_json_bytes({"user": user}), **common)
    if not 200 <= answer.status_code < 300:
        return _refused(answer, "requester: ")
    try:
        return int(json.loads(answer.body)["user"]["id"])
    except (ValueError, KeyError, TypeError):
        return AttemptResult(502, error="zendesk: requester: the answer had no user id", is_ambiguous=True)


def _refused(answer: HttpAnswer, step: str) -> AttemptResult:
    return refused(answer, f"zendesk: {step}" + error_text(answer))


def _json_bytes(value: object) -> bytes:
    # The same separators as the body kept on the row: a retry sends byte-identical JSON.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

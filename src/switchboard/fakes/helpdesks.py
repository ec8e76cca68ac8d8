"""Fake Freshdesk (API v2) and Zendesk (Support API) servers on 127.0.0.1, for the helpdesk integrations.

They speak the vendors' request and error shapes (protocols addendum D and E), checked against the
maintained clients python-freshdesk and zenpy in tests/fakes/test_helpdesk_fakes.py:

- Freshdesk: `POST /api/v2/tickets` (basic auth `api_key:X`; 201 and the ticket object; 400
  `{"description": "Validation failed", "errors": [{field, message, code}]}`; 401 `invalid_credentials`),
  `GET /api/v2/tickets/{id}`, and `GET /api/v2/search/tickets?query="tag:'…'"` (`{"results", "total"}`).
- Zendesk: `POST /api/v2/tickets.json` (basic auth `{email}/token:{api_token}`; 201 `{"ticket", "audit"}`;
  422 `RecordInvalid` with `details`; 401), `GET /api/v2/tickets/{id}.json`, and `Idempotency-Key`
  (same key and body: the stored answer with `x-idempotency-lookup: hit`; another body: 400
  `IdempotentRequestError`). Users: `POST /api/v2/users/create_or_update.json` (`{"user": {…}}`, matched
  by `external_id` (case-insensitively) or `email`: 200 and the updated user, else 201 and a new end
  user; 422 without a name for a new one), `GET /api/v2/users/search.json?external_id=…` (`{"users": [...],
  "count"}`) and `GET /api/v2/users/{id}.json`. A ticket's requester is its `requester_id` (an existing
  user, else 422), or its `requester` object (a new end user unless the e-mail is known), or the agent.

Tests script answers ahead of the real handling: `answer_next(status, body, headers, route=...)`, or
`stall_after_create(seconds)` (the ticket is created, then the answer is held, as a timeout would look).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from switchboard.fakes.loopback import LoopbackServer

__all__ = ["FakeFreshdesk", "FakeZendesk", "HelpdeskRequest"]


@dataclass(frozen=True, slots=True)
class HelpdeskRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    auth: tuple[str, str] | None
    status_code: int
    at: datetime

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Scripted:
    status_code: int
    body: bytes
    headers: dict[str, str]


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _FakeHelpdesk:
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    requests: list[HelpdeskRequest] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    _script: dict[str, list[_Scripted]] = field(default_factory=dict)
    _stall_s: float = 0.0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: LoopbackServer | None = None
    _base_url: str | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`; still answers after the server stopped (for assertions)."""
        assert self._base_url is not None, "the fake has not started"
        return self._base_url

    # The path of a ticket create, which `creates()` picks out of `requests`.
    ticket_create_path = ""

    def answer_next(
        self, status_code: int, body: Any = None, headers: dict[str, str] | None = None, *, route: str = "tickets"
    ) -> None:
        """The next request to `route` is answered with this instead of being handled (nothing is created).

        Routes: "tickets" (the ticket create) on both fakes; "users/search" and "users/create_or_update"
        on the Zendesk one."""
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self._script.setdefault(route, []).append(_Scripted(status_code, raw, dict(headers or {})))

    def stall_after_create(self, seconds: float) -> None:
        """The next create does create the ticket, then holds its answer for `seconds` (once)."""
        self._stall_s = seconds

    def creates(self) -> list[HelpdeskRequest]:
        """The ticket creates received, in order."""
        return [r for r in self.requests if r.method == "POST" and r.path == self.ticket_create_path]

    async def _record(self, request: Request, status_code: int, body: bytes) -> None:
        self.requests.append(HelpdeskRequest(
            request.method, request.url.path, dict(request.query_params), dict(request.headers), body,
            _basic_auth(request.headers.get("authorization")), status_code, self.wall(),
        ))

    async def _stall_once(self) -> None:
        if self._stall_s:
            seconds, self._stall_s = self._stall_s, 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _scripted(self, route: str = "tickets") -> Response | None:
        queued = self._script.get(route)
        if not queued:
            return None
        step = queued.pop(0)
        media = "application/json" if step.body[:1] in (b"{", b"[") else "text/plain"
        return Response(step.body, status_code=step.status_code, headers=step.headers, media_type=media)

    def build_app(self) -> FastAPI:
        raise NotImplementedError

    def _is_authorized(self, request: Request) -> bool:
        raise NotImplementedError

    def _unauthorized(self) -> Response:
        raise NotImplementedError

    async def _preempted(self, request: Request, body: bytes, route: str = "tickets") -> Response | None:
        """What answers before the request is handled, recorded: the next scripted answer for `route`, else
        the helpdesk's 401 for bad credentials. None: handle it."""
        scripted = self._scripted(route)
        if scripted is not None:
            await self._record(request, scripted.status_code, body)
            return scripted
        if not self._is_authorized(request):
            await self._record(request, 401, body)
            return self._unauthorized()
        return None

    async def __aenter__(self) -> _FakeHelpdesk:
        self._server = LoopbackServer(self.build_app(), name=type(self).__name__)
        await self._server.start()
        self._base_url = self._server.base_url
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._server is not None:
            await self._server.stop()


@dataclass
class FakeFreshdesk(_FakeHelpdesk):
    api_key: str = "fd-test-key"
    domain: str = "acme"
    ticket_create_path = "/api/v2/tickets"

    def _check(self, payload: Any) -> list[dict[str, str]]:
        if not isinstance(payload, dict):
            return [{"field": "", "message": "Invalid JSON", "code": "invalid_json"}]
        allowed = {"subject", "description", "phone", "name", "email", "requester_id", "status", "priority",
                   "source", "tags", "type", "cc_emails", "custom_fields", "group_id", "responder_id"}
        errors = [{"field": k, "message": "Unexpected/invalid field in request", "code": "invalid_field"}
                  for k in payload if k not in allowed]
        if not any(payload.get(k) for k in ("requester_id", "email", "phone", "facebook_id", "twitter_id")):
            errors.append({"field": "requester_id", "message": "Please fill at least 1 of requester_id, phone, "
                           "email, twitter_id, facebook_id fields", "code": "missing_field"})
        if payload.get("phone") and not payload.get("email") and not payload.get("name"):
            errors.append({"field": "name", "message": "can't be blank", "code": "missing_field"})
        for key, valid in (("status", {2, 3, 4, 5}), ("priority", {1, 2, 3, 4}), ("source", {1, 2, 3, 7, 9, 10})):
            if key in payload and payload[key] not in valid:
                errors.append({"field": key, "message": f"It should be one of these values: {sorted(valid)}",
                               "code": "invalid_value"})
        if not isinstance(payload.get("subject"), str) or not payload["subject"]:
            errors.append({"field": "subject", "message": "It should be a/an String", "code": "missing_field"})
        if not isinstance(payload.get("description"), str) or not payload["description"]:
            errors.append({"field": "description", "message": "It should be a/an String", "code": "missing_field"})
        tags = payload.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 32 for t in tags):
            errors.append({"field": "tags", "message": "It should be an array of strings of at most 32 characters",
                           "code": "invalid_value"})
        return errors

    def _is_authorized(self, request: Request) -> bool:
        auth = _basic_auth(request.headers.get("authorization"))
        return auth is not None and auth[0] == self.api_key

    def _unauthorized(self) -> Response:
        return JSONResponse({"code": "invalid_credentials",
                             "message": "You have to be logged in to perform this action."}, status_code=401)

    def build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None)

        @app.post("/api/v2/tickets")
        async def create(request: Request) -> Response:
            body = await request.body()
            preempted = await self._preempted(request, body)
            if preempted is not None:
                return preempted
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            errors = self._check(payload)
            if errors:
                await self._record(request, 400, body)
                return JSONResponse({"description": "Validation failed", "errors": errors}, status_code=400)
            now = _iso(self.wall())
            ticket = {
                "id": len(self.tickets) + 1, "subject": payload["subject"], "description": payload["description"],
                "description_text": payload["description"], "status": payload.get("status", 2),
                "priority": payload.get("priority", 1), "source": payload.get("source", 2),
                "requester_id": 1000 + len(self.tickets), "tags": payload.get("tags", []), "custom_fields": {},
                "type": None, "due_by": now, "fr_due_by": now, "created_at": now, "updated_at": now,
                "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "is_escalated": False, "spam": False,
                "fr_escalated": False, "group_id": None, "responder_id": None, "company_id": None,
                "email_config_id": None, "product_id": None, "to_emails": None,
            }
            self.tickets.append(ticket)
            await self._record(request, 201, body)
            await self._stall_once()
            return JSONResponse(ticket, status_code=201)

        @app.get("/api/v2/tickets/{ticket_id}")
        async def view(ticket_id: int, request: Request) -> Response:
            await self._record(request, 200, b"")
            if not self._is_authorized(request):
                return self._unauthorized()
            for ticket in self.tickets:
                if ticket["id"] == ticket_id:
                    return JSONResponse(ticket)
            return JSONResponse({"code": "access_denied", "message": "not found"}, status_code=404)

        @app.get("/api/v2/search/tickets")
        async def search(request: Request, query: str = "") -> Response:
            await self._record(request, 200, b"")
            if not self._is_authorized(request):
                return self._unauthorized()
            inner = query.strip().strip('"')
            if not (inner.startswith("tag:'") and inner.endswith("'")):
                return JSONResponse({"description": "Validation failed", "errors": [
                    {"field": "query", "message": "this fake understands tag:'…' only", "code": "invalid_value"}
                ]}, status_code=400)
            tag = inner[5:-1]
            found = [t for t in self.tickets if tag in t["tags"]]
            return JSONResponse({"results": found, "total": len(found)})

        return app


AGENT_ID = 1
_USER_ROLES = (None, "end-user", "agent", "admin")
_DIGITS = re.compile(r"^\+?[0-9][0-9 ().\-]{5,}$")


@dataclass
class FakeZendesk(_FakeHelpdesk):
    email: str = "ops@acme.example"
    api_token: str = "zd-test-token"
    subdomain: str = "acme"
    # Every user by id: the agent whose token the fake takes (id 1) and the end users created since.
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    _idempotency: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)
    ticket_create_path = "/api/v2/tickets.json"

    def __post_init__(self) -> None:
        self.users.setdefault(AGENT_ID, self._new_user(AGENT_ID, {"name": "Acme Ops", "email": self.email,
                                                                  "role": "admin"}))

    def end_users(self) -> list[dict[str, Any]]:
        return [u for u in self.users.values() if u["role"] == "end-user"]

    def user_requests(self) -> list[HelpdeskRequest]:
        """The requests to the users API (search, create_or_update, show), in order."""
        return [r for r in self.requests if r.path.startswith("/api/v2/users")]

    def _new_user(self, user_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        now = _iso(self.wall())
        return {
            "id": user_id, "url": f"https://{self.subdomain}.zendesk.com/api/v2/users/{user_id}.json",
            "name": fields.get("name"), "email": fields.get("email"), "phone": fields.get("phone"),
            "external_id": fields.get("external_id"), "role": fields.get("role") or "end-user", "active": True,
            "verified": bool(fields.get("verified", False)), "created_at": now, "updated_at": now,
        }

    def _add_user(self, fields: dict[str, Any]) -> dict[str, Any]:
        user = self._new_user(10_000 + len(self.users), fields)
        self.users[user["id"]] = user
        return user

    def _match_user(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        external_id, email = fields.get("external_id"), fields.get("email")
        for user in self.users.values():
            if external_id and (user["external_id"] or "").casefold() == str(external_id).casefold():
                return user
        for user in self.users.values():
            if email and (user["email"] or "").casefold() == str(email).casefold():
                return user
        return None

    def _check_user(self, payload: Any, *, is_new: bool) -> dict[str, list[dict[str, str]]] | None:
        user = payload.get("user") if isinstance(payload, dict) else None
        if not isinstance(user, dict):
            return {"base": [{"description": "User is missing", "error": "InvalidValue"}]}
        details: dict[str, list[dict[str, str]]] = {}
        if is_new and not (isinstance(user.get("name"), str) and user["name"].strip()):
            details["name"] = [{"description": "Name:  is too short (minimum is 1 character)", "error": "BlankValue"}]
        if user.get("role") not in _USER_ROLES:
            details["role"] = [{"description": "Role: is not valid", "error": "InvalidValue"}]
        phone = user.get("phone")
        if phone is not None and not (isinstance(phone, str) and _DIGITS.match(phone)):
            details["phone"] = [{"description": "Phone: is not a valid phone number", "error": "InvalidValue"}]
        return details or None

    def _check(self, payload: Any) -> tuple[str, dict[str, list[dict[str, str]]]] | None:
        ticket = payload.get("ticket") if isinstance(payload, dict) else None
        if not isinstance(ticket, dict):
            return "InvalidValue", {"base": [{"description": "Ticket is missing", "error": "InvalidValue"}]}
        details: dict[str, list[dict[str, str]]] = {}
        comment = ticket.get("comment")
        if not (isinstance(comment, dict) and (comment.get("body") or comment.get("html_body"))) and not ticket.get(
            "description"
        ):
            details["description"] = [{"description": "Description: cannot be blank", "error": "BlankValue"}]
        requester = ticket.get("requester")
        if requester is not None and not (isinstance(requester, dict) and (requester.get("name") or requester.get("email"))):
            details["requester"] = [{"description": "Requester: Name is too short", "error": "InvalidValue"}]
        requester_id = ticket.get("requester_id")
        if requester_id is not None and requester_id not in self.users:
            details["requester_id"] = [{"description": "Requester: is invalid", "error": "InvalidValue"}]
        if ticket.get("priority") not in (None, "urgent", "high", "normal", "low"):
            details["priority"] = [{"description": "Priority: is not valid", "error": "InvalidValue"}]
        return ("RecordInvalid", details) if details else None

    def _requester_of(self, fields: dict[str, Any]) -> int:
        if fields.get("requester_id") is not None:
            return int(fields["requester_id"])
        requester = fields.get("requester")
        if isinstance(requester, dict):
            # A requester object names a new end user unless its e-mail is known: a name-only requester
            # is a new user on every ticket.
            known = self._match_user({"email": requester.get("email")})
            user_id: int = (known if known is not None else self._add_user(requester))["id"]
            return user_id
        return AGENT_ID

    def _is_authorized(self, request: Request) -> bool:
        auth = _basic_auth(request.headers.get("authorization"))
        return auth == (f"{self.email}/token", self.api_token)

    def _unauthorized(self) -> Response:
        return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)

    def build_app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None)

        def invalid(details: dict[str, list[dict[str, str]]]) -> JSONResponse:
            return JSONResponse({"error": "RecordInvalid", "description": "Record validation errors",
                                 "details": details}, status_code=422)

        @app.post("/api/v2/tickets.json")
        async def create(request: Request) -> Response:
            body = await request.body()
            preempted = await self._preempted(request, body)
            if preempted is not None:
                return preempted
            key = request.headers.get("idempotency-key")
            digest = hashlib.sha256(body).hexdigest()
            if key is not None and key in self._idempotency:
                stored_digest, stored_status, stored_body = self._idempotency[key]
                if stored_digest != digest:
                    await self._record(request, 400, body)
                    return JSONResponse({"error": "IdempotentRequestError",
                                         "description": "Request parameters don't match the given idempotency key"},
                                        status_code=400)
                await self._record(request, stored_status, body)
                return Response(stored_body, status_code=stored_status, media_type="application/json",
                                headers={"x-idempotency-lookup": "hit"})
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            problem = self._check(payload)
            if problem is not None:
                await self._record(request, 422, body)
                return JSONResponse({"error": problem[0], "description": "Record validation errors",
                                     "details": problem[1]}, status_code=422)
            fields = payload["ticket"]
            ticket_id = len(self.tickets) + 1
            now = _iso(self.wall())
            comment = fields.get("comment") or {}
            ticket = {
                "id": ticket_id, "url": f"https://{self.subdomain}.zendesk.com/api/v2/tickets/{ticket_id}.json",
                "external_id": fields.get("external_id"), "subject": fields.get("subject"),
                "raw_subject": fields.get("subject"), "description": comment.get("body") or fields.get("description"),
                "priority": fields.get("priority"), "status": "new", "type": None,
                "requester_id": self._requester_of(fields), "submitter_id": AGENT_ID, "assignee_id": None,
                "tags": fields.get("tags", []), "created_at": now, "updated_at": now, "via": {"channel": "api"},
                "custom_fields": [], "is_public": comment.get("public", True),
            }
            self.tickets.append(ticket)
            answer = json.dumps({"ticket": ticket, "audit": {
                "id": 7000 + ticket_id, "ticket_id": ticket_id, "created_at": now, "author_id": AGENT_ID, "events": [],
            }}).encode()
            if key is not None:
                self._idempotency[key] = (digest, 201, answer)
            await self._record(request, 201, body)
            await self._stall_once()
            headers = {"x-idempotency-lookup": "miss"} if key is not None else {}
            return Response(answer, status_code=201, media_type="application/json", headers=headers)

        @app.get("/api/v2/tickets/{ticket_id}.json")
        async def view(ticket_id: int, request: Request) -> Response:
            await self._record(request, 200, b"")
            if not self._is_authorized(request):
                return self._unauthorized()
            for ticket in self.tickets:
                if ticket["id"] == ticket_id:
                    return JSONResponse({"ticket": ticket})
            return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, status_code=404)

        async def create_or_update_user(request: Request) -> Response:
            body = await request.body()
            preempted = await self._preempted(request, body, "users/create_or_update")
            if preempted is not None:
                return preempted
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            fields = payload.get("user") if isinstance(payload, dict) else None
            existing = self._match_user(fields) if isinstance(fields, dict) else None
            problem = self._check_user(payload, is_new=existing is None)
            if problem is not None:
                await self._record(request, 422, body)
                return invalid(problem)
            assert isinstance(fields, dict)
            if existing is None:
                await self._record(request, 201, body)
                return JSONResponse({"user": self._add_user(fields)}, status_code=201)
            for name in ("name", "external_id", "role"):
                if fields.get(name) is not None:
                    existing[name] = fields[name]
            # Zendesk adds a further phone identity rather than replacing the primary phone.
            if existing["phone"] is None and fields.get("phone") is not None:
                existing["phone"] = fields["phone"]
            existing["updated_at"] = _iso(self.wall())
            await self._record(request, 200, body)
            return JSONResponse({"user": existing}, status_code=200)

        for path in ("/api/v2/users/create_or_update.json", "/api/v2/users/create_or_update"):
            app.add_api_route(path, create_or_update_user, methods=["POST"])

        @app.get("/api/v2/users/search.json")
        async def search_users(request: Request, external_id: str | None = None) -> Response:
            preempted = await self._preempted(request, b"", "users/search")
            if preempted is not None:
                return preempted
            if not external_id:
                await self._record(request, 400, b"")
                return JSONResponse({"error": "InvalidParameter",
                                     "description": "this fake searches users by external_id only"}, status_code=400)
            found = [u for u in self.users.values() if (u["external_id"] or "").casefold() == external_id.casefold()]
            await self._record(request, 200, b"")
            return JSONResponse({"users": found, "next_page": None, "previous_page": None, "count": len(found)})

        @app.get("/api/v2/users/{user_id}.json")
        async def show_user(user_id: int, request: Request) -> Response:
            await self._record(request, 200, b"")
            if not self._is_authorized(request):
                return self._unauthorized()
            if user_id in self.users:
                return JSONResponse({"user": self.users[user_id]})
            return JSONResponse({"error": "RecordNotFound", "description": "Not found"}, status_code=404)

        return app

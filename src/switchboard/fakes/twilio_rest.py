"""A fake Twilio REST API (the Calls resource only) on 127.0.0.1, for the hand-off and hang-up paths.

It serves `POST`/`GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with HTTP basic auth
AccountSid:AuthToken, records every request, and answers like Twilio (a Call JSON resource, or Twilio's
error body). It runs a small FastAPI app under uvicorn inside `async with`; nothing outlives the block.

Pointing the real `twilio` 9.13 SDK at it: the SDK has no base-URL setting (TWILIO_EDGE/TWILIO_REGION
only rewrite `api.twilio.com` host names), but each domain keeps its root in `base_url`, which can be
replaced on the client after construction:

    client = Client(account_sid, auth_token, http_client=AsyncTwilioHttpClient())
    client.api.base_url = rest.base_url          # "http://127.0.0.1:<port>"; do not set TWILIO_EDGE/REGION
    await client.calls(call_sid).update_async(twiml="<Response>...</Response>")
    await client.http_client.close()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeAlias

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from switchboard.fakes.loopback import LoopbackServer

__all__ = ["FakeTwilioRest", "RestRequest"]

JsonDict: TypeAlias = dict[str, Any]
MAX_TWIML_CHARS = 4_000


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One request the fake received, and the status it answered."""

    method: str
    path: str
    account_sid: str
    call_sid: str
    form: dict[str, str]
    is_authenticated: bool
    status_code: int
    body: JsonDict


@dataclass(slots=True)
class _Call:
    call_sid: str
    status: str = "in-progress"
    to: str = "+15551230001"
    from_: str = "+15557654321"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None


UpdateHandler: TypeAlias = Callable[[RestRequest], "None | Awaitable[None]"]


def _twilio_error(status: int, code: int, message: str) -> JsonDict:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


class FakeTwilioRest:
    """Twilio's Calls REST resource for one account.

    Calls are live (`in-progress`) unless added otherwise: any `CA...` sid is accepted when
    `auto_create_calls` is true (the default), else only those given to `add_call`. `complete_call(sid)`
    makes a call `completed`, after which a `Twiml`/`Url` update gets Twilio's 400 (error 21220).
    `on_update(handler)` runs `handler(request)` after each accepted update, e.g. to make the simulated
    caller's stream stop as Twilio would when the call is redirected.
    """

    def __init__(self, *, account_sid: str, auth_token: str, host: str = "127.0.0.1", port: int = 0,
                 auto_create_calls: bool = True, shutdown_timeout_s: float = 5.0) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.auto_create_calls = auto_create_calls
        self.shutdown_timeout_s = shutdown_timeout_s
        self.requests: list[RestRequest] = []
        self._port = port
        self._calls: dict[str, _Call] = {}
        self._update_handlers: list[UpdateHandler] = []
        self._changed = asyncio.Condition()
        self._handed_out = 0
        self._loopback: LoopbackServer | None = None
        self.app = self._build_app()

    @property
    def port(self) -> int:
        if self._loopback is None:
            raise RuntimeError("FakeTwilioRest is not running")
        return self._loopback.port

    @property
    def base_url(self) -> str:
        """The root to use instead of `https://api.twilio.com`."""
        return f"http://{self.host}:{self.port}"

    def add_call(self, call_sid: str, *, status: str = "in-progress", to: str = "+15551230001",
                 from_: str = "+15557654321") -> None:
        self._calls[call_sid] = _Call(call_sid, status, to, from_)

    def complete_call(self, call_sid: str) -> None:
        """Mark the call as ended (the caller hung up); later redirects fail as they do at Twilio."""
        call = self._calls.setdefault(call_sid, _Call(call_sid))
        call.status = "completed"
        call.ended_at = datetime.now(UTC)

    def call_status(self, call_sid: str) -> str | None:
        call = self._calls.get(call_sid)
        return call.status if call else None

    def on_update(self, handler: UpdateHandler) -> None:
        self._update_handlers.append(handler)

    async def wait_for_request(self, timeout_s: float = 2.0) -> RestRequest:
        """The next request not yet returned by this method, in arrival order."""
        wanted = self._handed_out
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) > wanted)
        self._handed_out += 1
        return self.requests[wanted]

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTwilioRest:
        self._loopback = LoopbackServer(self.app, host=self.host, port=self._port, name="fake-twilio-rest",
                                        timeout_s=self.shutdown_timeout_s)
        await self._loopback.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._loopback is not None:
            await self._loopback.stop()

    # -- the app --------------------------------------------------------------------------------------------

    def _is_authenticated(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(password,
                                                                                         self.auth_token)

    def _call_resource(self, call: _Call) -> JsonDict:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.call_sid}.json"
        ended = call.status in ("completed", "canceled", "failed", "busy", "no-answer")
        duration_s = int((call.ended_at - call.created_at).total_seconds()) if ended and call.ended_at else None
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": format_datetime(call.created_at),
            "date_updated": format_datetime(datetime.now(UTC)),
            "direction": "inbound",
            "duration": None if duration_s is None else str(duration_s),
            "end_time": format_datetime(call.ended_at) if call.ended_at else None,
            "forwarded_from": None,
            "from": call.from_,
            "from_formatted": call.from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + "0" * 32,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": call.call_sid,
            "start_time": format_datetime(call.created_at),
            "status": call.status,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
                "payments": uri.replace(".json", "/Payments.json"),
                "events": uri.replace(".json", "/Events.json"),
                "siprec": uri.replace(".json", "/Siprec.json"),
                "streams": uri.replace(".json", "/Streams.json"),
                "transcriptions": uri.replace(".json", "/Transcriptions.json"),
                "user_defined_message_subscriptions": uri.replace(".json", "/UserDefinedMessageSubscriptions.json"),
                "user_defined_messages": uri.replace(".json", "/UserDefinedMessages.json"),
            },
            "to": call.to,
            "to_formatted": call.to,
            "trunk_sid": None,
            "uri": uri,
        }

    def _answer(self, form: dict[str, str], account_sid: str, call_sid: str, method: str,
                is_authenticated: bool) -> tuple[int, JsonDict]:
        if not is_authenticated:
            return 401, _twilio_error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return 404, _twilio_error(404, 20404, "The requested resource was not found")
        call = self._calls.get(call_sid)
        if call is None and self.auto_create_calls and call_sid.startswith("CA") and len(call_sid) == 34:
            call = self._calls[call_sid] = _Call(call_sid)
        if call is None:
            return 404, _twilio_error(
                404, 20404, f"The requested resource /2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json "
                "was not found")
        if method == "GET":
            return 200, self._call_resource(call)
        twiml, url, status = form.get("Twiml"), form.get("Url"), form.get("Status")
        if twiml is not None and url is not None:
            # Twilio refuses both at once; the exact error code here is not verified against Twilio.
            return 400, _twilio_error(400, 20001, "Twiml and Url are mutually exclusive.")
        if twiml is not None and len(twiml) > MAX_TWIML_CHARS:
            return 400, _twilio_error(400, 32018, "TwiML provided is too long. The maximum length is 4000 "
                                                  "characters.")
        if (twiml is not None or url is not None) and call.status != "in-progress":
            return 400, _twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status is not None:
            if status not in ("completed", "canceled"):
                return 400, _twilio_error(400, 21218, f"Invalid Status: {status}")
            if status == "canceled" and call.status not in ("queued", "ringing"):
                return 200, self._call_resource(call)  # Twilio ignores a cancel of an answered call.
            if call.status not in ("completed", "canceled"):
                call.status = status
                call.ended_at = datetime.now(UTC)
        return 200, self._call_resource(call)

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        path = "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"

        async def handle(request: Request, account_sid: str, call_sid: str) -> JSONResponse:
            form = {key: str(value) for key, value in (await request.form()).items()}
            is_authenticated = self._is_authenticated(request)
            status_code, body = self._answer(form, account_sid, call_sid, request.method, is_authenticated)
            record = RestRequest(request.method, request.url.path, account_sid, call_sid, form,
                                 is_authenticated, status_code, body)
            self.requests.append(record)
            async with self._changed:
                self._changed.notify_all()
            if request.method == "POST" and status_code == 200:
                for handler in self._update_handlers:
                    outcome = handler(record)
                    if inspect.isawaitable(outcome):
                        await outcome
            headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status_code == 401 else None
            return JSONResponse(body, status_code=status_code, headers=headers)

        app.add_api_route(path, handle, methods=["GET", "POST"])
        return app

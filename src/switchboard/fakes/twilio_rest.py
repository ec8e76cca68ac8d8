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
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeAlias

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from switchboard.fakes.loopback import LoopbackServer
from switchboard.simulator.twilio_signing import SharedKey, twilio_signature_headers

__all__ = ["DialLeg", "FakeTwilioRest", "RestRequest"]

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


@dataclass(slots=True)
class DialLeg:
    """A `<Dial>` the fake performed after a redirect, as Twilio would: what it dialled, and what the server's
    `<Number url>` (whisper) and `<Dial action>` answered."""

    call_sid: str
    number: str
    caller_id: str | None
    timeout_s: int | None
    action_url: str | None
    whisper_url: str | None
    dial_call_status: str = ""
    whisper_status_code: int | None = None
    whisper_twiml: str | None = None
    action_status_code: int | None = None
    action_twiml: str | None = None
    error: str | None = None


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
                 auto_create_calls: bool = True, shutdown_timeout_s: float = 5.0, human: str = "no-answer",
                 ring_s: float = 0.0, talk_s: float = 0.0, callback_timeout_s: float = 10.0) -> None:
        self.account_sid = account_sid
        # The person a `<Dial>` reaches: "answers", or Twilio's DialCallStatus when they don't ("no-answer",
        # "busy", "failed"). `ring_s`/`talk_s` stand for ringing and conversation (0 in tests).
        self.human = human
        self.ring_s = ring_s
        self.talk_s = talk_s
        self.callback_timeout_s = callback_timeout_s
        self.dial_legs: list[DialLeg] = []
        self.auth_token = auth_token
        # Set: the whisper and action callbacks are signed as under a Webhooks Rule with this SharedKey.
        self.shared_key: SharedKey | None = None
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

    async def wait_for_dial(self, timeout_s: float = 5.0) -> DialLeg:
        """The first `<Dial>` once Twilio is done with it (its action answered, or it failed)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(
                lambda: bool(self.dial_legs) and (self.dial_legs[0].action_twiml is not None
                                                   or self.dial_legs[0].error is not None))
        return self.dial_legs[0]

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

    async def _follow_dial(self, call_sid: str, twiml: str) -> None:
        """Run a redirect's `<Dial>` as Twilio does: ring the number; if the person answers, fetch the
        `<Number url>` (their whisper) and connect; when the dialled call ends, post the `action` with
        `DialCallStatus`. Every callback is signed over its URL and form as Twilio signs."""
        try:
            dial = ElementTree.fromstring(twiml).find("Dial")
        except ElementTree.ParseError:
            return
        number = dial.find("Number") if dial is not None else None
        if dial is None or number is None:
            return
        timeout = dial.get("timeout")
        leg = DialLeg(call_sid=call_sid, number=(number.text or "").strip(), caller_id=dial.get("callerId"),
                      timeout_s=int(timeout) if timeout and timeout.isdigit() else None,
                      action_url=dial.get("action"), whisper_url=number.get("url"))
        self.dial_legs.append(leg)
        call = self._calls.get(call_sid) or _Call(call_sid)
        child_sid = "CA" + secrets.token_hex(16)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.callback_timeout_s)) as http:

            async def post(url: str, params: dict[str, str]) -> tuple[int, str]:
                headers = {**twilio_signature_headers(url, params, auth_token=self.auth_token,
                                                      shared_key=self.shared_key),
                           "User-Agent": "TwilioProxy/1.1"}
                response = await http.post(url, data=params, headers=headers)
                return response.status_code, response.text

            try:
                await asyncio.sleep(min(self.ring_s, leg.timeout_s or 30))
                bridged = False
                if self.human == "answers":
                    bridged = True
                    if leg.whisper_url:
                        leg.whisper_status_code, leg.whisper_twiml = await post(leg.whisper_url, {
                            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": child_sid,
                            "ParentCallSid": call_sid, "CallStatus": "in-progress", "Direction": "outbound-dial",
                            "From": leg.caller_id or call.from_, "To": leg.number, "Called": leg.number,
                            "Caller": leg.caller_id or call.from_,
                        })
                        # A whisper that hangs up (or fails) declines the call: the parties are never bridged.
                        bridged = leg.whisper_status_code == 200 and "<Hangup" not in (leg.whisper_twiml or "")
                    await asyncio.sleep(self.talk_s)
                leg.dial_call_status = "completed" if self.human == "answers" else self.human
                if leg.action_url:
                    params = {
                        "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid,
                        "CallStatus": "in-progress", "Direction": "inbound", "From": call.from_, "To": call.to,
                        "DialCallSid": child_sid, "DialCallStatus": leg.dial_call_status,
                        "DialBridged": "true" if bridged else "false",
                    }
                    if bridged:
                        params["DialCallDuration"] = str(int(self.talk_s))
                    leg.action_status_code, leg.action_twiml = await post(leg.action_url, params)
                    if "<Hangup" in leg.action_twiml:
                        self.complete_call(call_sid)
                else:
                    leg.action_twiml = ""
            except httpx.HTTPError as exc:
                leg.error = type(exc).__name__
            async with self._changed:
                self._changed.notify_all()

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
            twiml = form.get("Twiml") or ""
            follow = (BackgroundTask(self._follow_dial, call_sid, twiml)
                      if request.method == "POST" and status_code == 200 and "<Dial" in twiml else None)
            return JSONResponse(body, status_code=status_code, headers=headers, background=follow)

        app.add_api_route(path, handle, methods=["GET", "POST"])
        return app

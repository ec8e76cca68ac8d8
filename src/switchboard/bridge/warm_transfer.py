"""Warm transfer: the `<Dial>` that hands a caller to a person, and the two Twilio callbacks it names.

The REST update carries `<Dial callerId action timeout><Number url>`. When the person answers, Twilio
fetches the `<Number url>` (the whisper): we tell only them who is calling and why, then they are
connected. When the dialled call ends, Twilio posts the `action` with `DialCallStatus`: if nobody
answered, the caller hears that they will be called back, a callback ticket is created, and the call ends.

Both callbacks may land on any voice server: everything they need travels in their URL path as a token
signed with `url_tokens` (purposes `dial-whisper`, `dial-action`); the caller's number, the reason and
the summary inside it are sealed (AES-GCM, key derived from SWITCHBOARD_SERVICE_TOKEN), so a URL in a
log shows neither. Both validate `X-Twilio-Signature` over the exact URL and POST parameters.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from twilio.twiml.voice_response import VoiceResponse

from switchboard.bridge.twilio_signatures import TwilioSignatures
from switchboard.clock import Clock
from switchboard.config import VoiceSettings
from switchboard.errors import SwitchboardError
from switchboard.logs import get_logger, mask_phone, start_call_context
from switchboard.url_tokens import TokenRejected, derive_url_token_key, sign_url_token, verify_url_token

log = get_logger("switchboard.transfer")

WHISPER_PATH = "/twilio-dial/whisper"
ACTION_PATH = "/twilio-dial/action"
WHISPER_PURPOSE = "dial-whisper"
ACTION_PURPOSE = "dial-action"
TRANSFER_TOOL = "transfer_to_human"
DEFAULT_DIAL_TIMEOUT_S = 20
# The action comes when the dialled call ends: up to Twilio's default 4 h time limit after the dial.
TOKEN_TTL_S = 5 * 3600
# Twilio refuses inline TwiML longer than this (error 32018).
MAX_TWIML_CHARS = 4000
NOT_ANSWERED = frozenset({"no-answer", "busy", "failed", "canceled"})
NOBODY_FREE = ("Sorry, nobody is free to take your call right now. We will call you back as soon as possible. "
               "Goodbye.")
_SEAL_CONTEXT = b"switchboard sealed url fields v1"


@dataclass(frozen=True, slots=True)
class HandOver:
    """What the person who answers is told, and what the callbacks record."""

    call_sid: str
    tenant: str
    company: str
    caller_number: str
    reason: str
    summary: str
    message_id: str = ""  # the record's transfer_to_human tool message (its result shows the outcome)
    seq: int = 0


class FieldSealer:
    """AES-GCM over compressed JSON, keyed from the service token: URL-safe, opaque, tamper-evident."""

    def __init__(self, service_token: str) -> None:
        key = hmac.new(service_token.encode(), _SEAL_CONTEXT, hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, fields: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        plain = zlib.compress(json.dumps(fields, separators=(",", ":")).encode())
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, None)).rstrip(b"=").decode()

    def open(self, sealed: str) -> dict[str, Any]:
        """Raises: TokenRejected("malformed") for anything this deployment did not seal."""
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], None)
            fields = json.loads(zlib.decompress(plain))
        except (binascii.Error, ValueError, InvalidTag, zlib.error):
            raise TokenRejected("malformed") from None
        if not isinstance(fields, dict):
            raise TokenRejected("malformed")
        return fields


class HandOverTokens:
    """Signs and reads the hand-over tokens of the two callback URLs."""

    def __init__(self, service_token: str) -> None:
        self._key = derive_url_token_key(service_token)
        self._sealer = FieldSealer(service_token)

    def sign(self, hand_over: HandOver, *, purpose: str, now_s: float) -> str:
        sealed = self._sealer.seal(asdict(hand_over))
        return sign_url_token(self._key, purpose=purpose, fields={"s": sealed}, expires_at_s=now_s + TOKEN_TTL_S)

    def read(self, token: str, *, purpose: str, now_s: float) -> HandOver:
        """Raises: TokenRejected (forged, expired, another purpose, malformed)."""
        fields = verify_url_token(self._key, token, purpose=purpose, now_s=now_s)
        opened = self._sealer.open(fields.get("s", ""))
        try:
            return HandOver(**{name: opened[name] for name in HandOver.__dataclass_fields__})
        except (KeyError, TypeError):
            raise TokenRejected("malformed") from None


def transfer_twiml(tokens: HandOverTokens, hand_over: HandOver, *, base_url: str, number: str,
                   caller_id: str | None, timeout_s: int, apology: str | None, now_s: float) -> str:
    """The REST update's TwiML: `[<Say>apology</Say>]<Dial callerId action timeout answerOnBridge><Number url>`.

    The summary is shortened until the whole document fits Twilio's 4000 characters."""
    summary = hand_over.summary[:600]
    while True:
        shortened = HandOver(**{**asdict(hand_over), "summary": summary, "reason": hand_over.reason[:200]})
        action_url = f"{base_url}{ACTION_PATH}/{tokens.sign(shortened, purpose=ACTION_PURPOSE, now_s=now_s)}"
        whisper_url = f"{base_url}{WHISPER_PATH}/{tokens.sign(shortened, purpose=WHISPER_PURPOSE, now_s=now_s)}"
        response = VoiceResponse()
        if apology:
            response.say(apology)
        dial = response.dial(caller_id=caller_id, action=action_url, method="POST", timeout=timeout_s,
                             answer_on_bridge=True)
        dial.number(number, url=whisper_url, method="POST")
        twiml = str(response.to_xml())
        if len(twiml) <= MAX_TWIML_CHARS or not summary:
            return twiml
        summary = summary[: max(0, len(summary) - 100)]


def whisper_text(hand_over: HandOver) -> str:
    """Said to the person who answered, before the caller is put through."""
    number = " ".join(hand_over.caller_number) if hand_over.caller_number else "an unknown number"
    parts = [f"Hello, this is the {hand_over.company} phone assistant with a caller for you, "
             f"calling from {number}."]
    if hand_over.reason:
        parts.append(f"Reason: {hand_over.reason}")
    if hand_over.summary:
        parts.append(f"Summary: {hand_over.summary}")
    parts.append("Connecting you now.")
    return " ".join(parts)


def whisper_twiml(hand_over: HandOver) -> str:
    response = VoiceResponse()
    response.say(whisper_text(hand_over))
    return str(response.to_xml())


def nobody_free_twiml() -> str:
    response = VoiceResponse()
    response.say(NOBODY_FREE)
    response.hangup()
    return str(response.to_xml())


def hang_up_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def transfer_router(settings: VoiceSettings, signatures: TwilioSignatures, clock: Clock,
                    base_url_of: Callable[[Request], str]) -> APIRouter:
    """`POST {WHISPER_PATH}/{token}` and `POST {ACTION_PATH}/{token}` (Twilio's `<Number url>` and `<Dial action>`).

    The App server outbox and ticket client are read from `request.app.state.deps` (set by the lifespan)."""
    router = APIRouter()
    tokens = HandOverTokens(settings.switchboard_service_token)

    async def checked(request: Request, token: str, purpose: str) -> tuple[HandOver, dict[str, str]] | Response:
        form = await request.form()
        params = {key: str(value) for key, value in form.multi_items()}
        if settings.twilio_validate_signatures:
            check = signatures.check(base_url_of(request) + request.url.path, params, request.headers)
            if check.refusal is not None:
                log.warning("transfer.callback_rejected", purpose=purpose, **check.log_fields())
                return PlainTextResponse("invalid signature", status_code=403)
        try:
            hand_over = tokens.read(token, purpose=purpose, now_s=clock.wall().timestamp())
        except TokenRejected as exc:
            log.warning("transfer.callback_rejected", purpose=purpose, reason=exc.reason)
            return PlainTextResponse("unknown transfer", status_code=404)
        start_call_context(call_sid=hand_over.call_sid, tenant=hand_over.tenant)
        return hand_over, params

    def record_outcome(request: Request, hand_over: HandOver, outcome: dict[str, Any]) -> None:
        recorder = getattr(getattr(request.app.state, "deps", None), "recorder", None)
        if recorder is None or not hand_over.message_id:
            return
        result = json.dumps({**outcome, "summary": hand_over.summary}, ensure_ascii=False)
        recorder.add_message_nowait(
            hand_over.call_sid, message_id=f"{hand_over.call_sid}:{hand_over.message_id}", role="tool",
            text=TRANSFER_TOOL, at=clock.wall(), seq=hand_over.seq, name=TRANSFER_TOOL, result=result)

    @router.post(WHISPER_PATH + "/{token}")
    async def dial_whisper(request: Request, token: str) -> Response:
        checked_request = await checked(request, token, WHISPER_PURPOSE)
        if isinstance(checked_request, Response):
            return checked_request
        hand_over, _ = checked_request
        record_outcome(request, hand_over, {"ok": True, "status": "answered"})
        log.info("transfer.answered")
        return _twiml(whisper_twiml(hand_over))

    @router.post(ACTION_PATH + "/{token}")
    async def dial_action(request: Request, token: str) -> Response:
        checked_request = await checked(request, token, ACTION_PURPOSE)
        if isinstance(checked_request, Response):
            return checked_request
        hand_over, params = checked_request
        status = params.get("DialCallStatus", "")
        bridged = params.get("DialBridged", "").lower()
        if status in {"completed", "answered"} and bridged != "false":
            # The person took the call and it has ended: so does the caller's leg.
            outcome: dict[str, Any] = {"ok": True, "status": "answered"}
            if params.get("DialCallDuration", "").isdigit():
                outcome["talked_s"] = int(params["DialCallDuration"])
            record_outcome(request, hand_over, outcome)
            log.info("transfer.ended", dial_call_status=status)
            return _twiml(hang_up_twiml())
        reason = status if status in NOT_ANSWERED else f"{status or 'unknown'} (not bridged)"
        outcome = {"ok": False, "status": "not_answered", "dial_call_status": reason}
        ticket = await _callback_ticket(request, hand_over, reason, settings.http_timeout_s)
        outcome.update(ticket)
        record_outcome(request, hand_over, outcome)
        log.info("transfer.not_answered", dial_call_status=reason, caller=mask_phone(hand_over.caller_number),
                 ticket_created="callback_ticket_id" in ticket, ticket_queued="callback_ticket" in ticket)
        return _twiml(nobody_free_twiml())

    return router


def callback_ticket_key(hand_over: HandOver) -> str:
    """The callback ticket's idempotency key: one ticket per transfer, however often Twilio retries the
    action, whichever replica answers it, and whether it is created at once or later by the outbox."""
    return f"{hand_over.call_sid}:transfer-callback:{hand_over.message_id or 'dial'}"[:200]


async def _callback_ticket(request: Request, hand_over: HandOver, dial_call_status: str,
                           timeout_s: float) -> dict[str, Any]:
    """A callback ticket with the caller's full number and the summary. Returns what the record shows:
    `{"callback_ticket_id": id}`; `{"callback_ticket": "queued"}` when the App server could not be reached
    (the outbox delivers it once it is back); `{}` when it could not be created at all."""
    recorder = getattr(getattr(request.app.state, "deps", None), "recorder", None)
    if recorder is None or not hasattr(recorder, "create_ticket") or not hand_over.caller_number:
        log.error("transfer.ticket_failed", reason="no_ticket_service_or_number")
        return {}
    what = hand_over.summary or hand_over.reason or "The caller asked for a person."
    ticket_fields: dict[str, Any] = {
        "call_sid": hand_over.call_sid, "kind": "callback", "phone_number": hand_over.caller_number,
        "reason": f"Transfer not answered ({dial_call_status}). {what}", "requested_time": None,
        "idempotency_key": callback_ticket_key(hand_over)}
    try:
        async with asyncio.timeout(timeout_s * 2):
            ticket = await recorder.create_ticket(**ticket_fields)
    except (TimeoutError, SwitchboardError) as exc:
        retryable = isinstance(exc, TimeoutError) or getattr(exc, "retryable", False)
        if retryable and hasattr(recorder, "create_ticket_nowait"):
            # The App server is down (or slow): the outbox keeps it, spooled, and delivers it when it is back.
            recorder.create_ticket_nowait(**ticket_fields)
            log.warning("transfer.ticket_queued", error=type(exc).__name__)
            return {"callback_ticket": "queued"}
        log.error("transfer.ticket_failed", error=type(exc).__name__)
        return {}
    return {"callback_ticket_id": ticket.get("id")}


def _twiml(xml: str) -> Response:
    return Response(content=xml, media_type="text/xml")

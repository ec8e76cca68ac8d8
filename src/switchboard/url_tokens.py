"""Signed, expiring tokens carried in the path of a URL we hand to Twilio (stream, `<Dial>` callbacks).

Any server of one deployment verifies a token without a lookup: it is an HMAC-SHA256 over its fields,
keyed from `SWITCHBOARD_SERVICE_TOKEN` (shared by every server of a deployment). Pure: no I/O, no clock;
the caller passes wall-clock seconds, since a token crosses machines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

import orjson

_KEY_CONTEXT = b"switchboard url tokens v1"


class TokenRejected(Exception):
    """A token is malformed, forged, expired or issued for another purpose; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def derive_url_token_key(service_token: str) -> bytes:
    """The signing key: derived from the deployment's service token, never the token itself."""
    return hmac.new(service_token.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_url_token(key: bytes, *, purpose: str, fields: Mapping[str, str], expires_at_s: float) -> str:
    """A URL-path-safe token (`[A-Za-z0-9_-.]`) binding `purpose`, `fields` and an expiry (epoch seconds)."""
    body = {"p": purpose, "x": int(expires_at_s), "f": dict(fields)}
    payload = _b64(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_url_token(key: bytes, token: str, *, purpose: str, now_s: float) -> dict[str, str]:
    """The fields of a token this deployment signed for `purpose`, still valid at `now_s`.

    Raises:
        TokenRejected: reason `malformed`, `bad_signature`, `wrong_purpose` or `expired`.
    """
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise TokenRejected("malformed")
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenRejected("malformed") from None
    expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise TokenRejected("bad_signature")
    try:
        body = orjson.loads(_unb64(payload))
        token_purpose, expires_at_s, fields = body["p"], body["x"], body["f"]
    except (ValueError, KeyError, TypeError):
        raise TokenRejected("malformed") from None
    if token_purpose != purpose:
        raise TokenRejected("wrong_purpose")
    if not isinstance(expires_at_s, int) or now_s > expires_at_s:
        raise TokenRejected("expired")
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise TokenRejected("malformed")
    return dict(fields)

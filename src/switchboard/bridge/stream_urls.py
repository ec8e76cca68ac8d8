"""Per-call Media Stream URLs: `wss://<public host>/twilio-stream/<replica>/<token>` (contract §3).

The token (switchboard.url_tokens, purpose "stream") binds the call SID, the tenant and an expiry, so any
voice server of the deployment verifies it without a lookup; the replica segment names the voice server
that pre-opened the model session, for an edge that routes on it. Twilio signs the upgrade over exactly
this URL, so a captured signature opens no other call's stream. Pure: no I/O, no clock (callers pass
wall-clock seconds, since a URL crosses machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from switchboard.url_tokens import TokenRejected, sign_url_token, verify_url_token

STREAM_PATH = "/twilio-stream"
STREAM_TOKEN_PURPOSE = "stream"


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What a verified stream URL says: the call it was issued for and who pre-opened it."""

    call_sid: str
    tenant: str
    replica: str


def stream_base_url(public_base_url: str) -> str:
    """`https://h[:p]` -> `wss://h[:p]/twilio-stream` (contract §2: scheme mapped, port kept)."""
    parts = urlsplit(public_base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{STREAM_PATH}"


def issue_stream_url(public_base_url: str, key: bytes, *, call_sid: str, tenant: str, replica: str,
                     now_s: float, ttl_s: float) -> str:
    """The stream URL for one call, valid for `ttl_s` seconds from `now_s` (epoch seconds)."""
    token = sign_url_token(key, purpose=STREAM_TOKEN_PURPOSE, fields={"call_sid": call_sid, "tenant": tenant},
                           expires_at_s=now_s + ttl_s)
    return f"{stream_base_url(public_base_url)}/{replica}/{token}"


def verify_stream_path(key: bytes, path: str, *, now_s: float) -> StreamGrant:
    """The grant of a `/twilio-stream/<replica>/<token>` path this deployment issued and that has not expired.

    Raises:
        TokenRejected: reason `not_issued` for a path of another shape (the bare `/twilio-stream` included),
            else the token's own reason (`malformed`, `bad_signature`, `wrong_purpose`, `expired`).
    """
    prefix = STREAM_PATH + "/"
    if not path.startswith(prefix):
        raise TokenRejected("not_issued")
    segments = path[len(prefix):].split("/")
    if len(segments) != 2 or not segments[0] or not segments[1]:
        raise TokenRejected("not_issued")
    replica, token = segments
    fields = verify_url_token(key, token, purpose=STREAM_TOKEN_PURPOSE, now_s=now_s)
    call_sid, tenant = fields.get("call_sid"), fields.get("tenant")
    if not call_sid or not tenant:
        raise TokenRejected("malformed")
    return StreamGrant(call_sid=call_sid, tenant=tenant, replica=replica)


def is_stream_path(path: str) -> bool:
    return path == STREAM_PATH or path.startswith(STREAM_PATH + "/")

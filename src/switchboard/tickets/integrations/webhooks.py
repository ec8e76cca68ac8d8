"""Standard Webhooks: sign and send one message (protocols addendum C).

Signed content is `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under the base64 secret
after `whsec_`; `webhook-timestamp` is this attempt's Unix seconds, `webhook-id` the delivery's fixed id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

import httpx

from switchboard.outbound_http import MissingVariable, Resolver, expand_variables
from switchboard.tickets.integrations.config import WebhookEndpoint
from switchboard.tickets.integrations.policy import AttemptResult
from switchboard.tickets.integrations.transport import (
    OutboundFailure,
    answer_text,
    not_sent,
    refused,
    send,
    unconfigured,
)

USER_AGENT = "Switchboard-Webhooks/1"


class InvalidSecret(ValueError):
    """The secret is not `whsec_<base64>`."""


def secret_bytes(secret: str) -> bytes:
    """Raises: InvalidSecret."""
    encoded = secret.removeprefix("whsec_")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("the webhook secret is not whsec_<base64>") from None
    if not raw:
        raise InvalidSecret("the webhook secret is empty")
    return raw


def sign(secret: bytes, message_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode("ascii")


def signed_headers(secret: bytes, message_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(secret, message_id, timestamp_s, body),
    }


async def send_webhook(
    client: httpx.AsyncClient, endpoint: WebhookEndpoint, *, message_id: str, body: bytes, timestamp_s: int,
    environ: Mapping[str, str], resolver: Resolver, timeout_s: float,
) -> AttemptResult:
    """POST the signed message once; never raises for the peer's or the network's behaviour."""
    try:
        url = expand_variables(endpoint.url, environ)
        secret = secret_bytes(expand_variables(endpoint.secret, environ))
    except MissingVariable as exc:
        return unconfigured(exc)
    except InvalidSecret as exc:
        return AttemptResult(None, error=str(exc), is_configuration_error=True)
    try:
        answer = await send(
            client, "POST", url, headers=signed_headers(secret, message_id, timestamp_s, body), content=body,
            allow_private_network=endpoint.allow_private_network, timeout_s=timeout_s, resolver=resolver,
        )
    except OutboundFailure as exc:
        return not_sent(exc)
    code = answer.status_code
    if 200 <= code < 300:
        return AttemptResult(code)
    if 300 <= code < 400:
        error = f"{code} redirect not followed"
    else:
        error = f"{code} {answer_text(answer, 200)}".strip()
    return refused(answer, error)

"""The headers Twilio signs a request with (protocols §2.6), computed by the `twilio` SDK's own
`RequestValidator`: the account Auth Token and HMAC-SHA1, or, under a Webhooks Rule with a SharedKey, that
key's secret and HMAC-SHA256 announced by `X-Twilio-Webhooks-Signature-Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import HMAC_SHA256, RequestValidator

SharedKey = tuple[str, str]
"""A Webhooks-Rule SharedKey: (key id, secret)."""


def twilio_signature_headers(url: str, params: Mapping[str, str], *, auth_token: str,
                             shared_key: SharedKey | None = None, signature: str | None = None) -> dict[str, str]:
    """`X-Twilio-Signature` over `url` and `params` as Twilio computes it, plus the settings header when signed
    with `shared_key`. `signature` replaces the computed value (to test rejection)."""
    headers: dict[str, str] = {}
    secret, algorithm = auth_token, None
    if shared_key is not None:
        key_id, secret = shared_key
        algorithm = HMAC_SHA256
        headers["X-Twilio-Webhooks-Signature-Settings"] = f"key={key_id},algorithm={HMAC_SHA256}"
    headers["X-Twilio-Signature"] = (signature if signature is not None
                                     else RequestValidator(secret).compute_signature(url, params, algorithm=algorithm))
    return headers

"""Whether a request really comes from Twilio: its `X-Twilio-Signature`, checked with the secret and hash the
request announces (protocols §2.6). Without `X-Twilio-Webhooks-Signature-Settings` Twilio signs with the
Auth Token and HMAC-SHA1; with `key=<id>,algorithm=HMAC_SHA256` it signs with that Webhooks-Rule SharedKey's
secret and SHA-256, over the same string (the URL, then the sorted POST parameters).

Pure: no I/O, no logging; callers count and log the verdict. Used at webhook and handshake time only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator, get_signature_algorithm

# Starlette's `Headers` are looked up case-insensitively, by these lower-case names.
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"

# Why a request was refused: the metrics' `reason`/`outcome` label and the log's `reason`.
BAD_SIGNATURE = "bad_signature"
UNKNOWN_SHARED_KEY = "unknown_shared_key"
UNSUPPORTED_ALGORITHM = "unsupported_signature_algorithm"
SIGNATURE_REFUSALS = frozenset({BAD_SIGNATURE, UNKNOWN_SHARED_KEY, UNSUPPORTED_ALGORITHM})

# What the request named is echoed into logs: bounded, as anyone can send the header.
_MAX_LOGGED_CHARS = 64


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """`refusal` is None when the signature matches, else one of SIGNATURE_REFUSALS. `algorithm` and
    `shared_key_id` are what the request announced (cut short; an id, never a secret)."""

    refusal: str | None
    algorithm: str = HMAC_SHA1
    shared_key_id: str | None = None

    @property
    def is_valid(self) -> bool:
        return self.refusal is None

    def log_fields(self) -> dict[str, str]:
        """`reason`, `algorithm` and, when the request named one, `shared_key_id`."""
        fields = {"reason": self.refusal or "ok", "algorithm": self.algorithm}
        if self.shared_key_id is not None:
            fields["shared_key_id"] = self.shared_key_id
        return fields


def _shared_key_id(signature_settings: str) -> str | None:
    for part in signature_settings.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "key" and value.strip():
            return value.strip()
    return None


class TwilioSignatures:
    """Checks `X-Twilio-Signature` with the Auth Token, or with the SharedKey the request names.

    A settings header that names SHA-1 (or no algorithm) means the Auth Token signature, as Twilio's own
    `get_signature_algorithm` reads it; one naming SHA-256 needs a key id from `shared_keys`; any other
    algorithm is refused.
    """

    def __init__(self, auth_token: str, shared_keys: Mapping[str, str]) -> None:
        self._auth_token = RequestValidator(auth_token)
        self._shared_keys = {key_id: RequestValidator(secret) for key_id, secret in shared_keys.items()}

    def check(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> SignatureCheck:
        """`url` exactly as Twilio requested it (public scheme, host and path), `params` the POST form
        (empty for the stream upgrade), `headers` the request's (lower-case lookups)."""
        signature = headers.get(SIGNATURE_HEADER, "")
        signature_settings = headers.get(SIGNATURE_SETTINGS_HEADER, "")
        announced = get_signature_algorithm(signature_settings)
        algorithm = announced.upper()
        logged_algorithm = announced[:_MAX_LOGGED_CHARS]
        if algorithm == HMAC_SHA1:
            is_valid = self._auth_token.validate(url, params, signature, algorithm=HMAC_SHA1)
            return SignatureCheck(None if is_valid else BAD_SIGNATURE)
        key_id = _shared_key_id(signature_settings)
        logged_key_id = key_id[:_MAX_LOGGED_CHARS] if key_id is not None else None
        if algorithm != HMAC_SHA256:
            return SignatureCheck(UNSUPPORTED_ALGORITHM, logged_algorithm, logged_key_id)
        validator = self._shared_keys.get(key_id) if key_id is not None else None
        if validator is None:
            return SignatureCheck(UNKNOWN_SHARED_KEY, logged_algorithm, logged_key_id)
        is_valid = validator.validate(url, params, signature, algorithm=HMAC_SHA256)
        return SignatureCheck(None if is_valid else BAD_SIGNATURE, logged_algorithm, logged_key_id)

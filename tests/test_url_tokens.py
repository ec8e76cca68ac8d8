"""Signed URL tokens: what one server signs, another verifies; anything else is refused with a reason."""

import pytest

from switchboard.url_tokens import TokenRejected, derive_url_token_key, sign_url_token, verify_url_token

KEY = derive_url_token_key("service-token-a")


def _token(**overrides: object) -> str:
    args: dict[str, object] = {
        "purpose": "stream",
        "fields": {"call_sid": "CA1", "tenant": "acme"},
        "expires_at_s": 1_000.0,
    }
    args.update(overrides)
    return sign_url_token(KEY, **args)  # type: ignore[arg-type]


def test_a_token_verifies_on_any_server_with_the_same_service_token() -> None:
    other_server_key = derive_url_token_key("service-token-a")
    assert verify_url_token(other_server_key, _token(), purpose="stream", now_s=999.0) == {
        "call_sid": "CA1",
        "tenant": "acme",
    }


def test_the_token_is_safe_in_a_url_path() -> None:
    token = _token(fields={"call_sid": "CA1", "tenant": "acme/../x?y"})
    assert all(ch.isalnum() or ch in "-_." for ch in token)


@pytest.mark.parametrize(
    ("token", "purpose", "now_s", "reason"),
    [
        (_token(), "stream", 1_001.0, "expired"),
        (_token(), "dial-action", 10.0, "wrong_purpose"),
        (sign_url_token(derive_url_token_key("another-deployment"), purpose="stream", fields={}, expires_at_s=1e4),
         "stream", 10.0, "bad_signature"),
        ("no-dot-here", "stream", 10.0, "malformed"),
        (_token()[:-2] + "AA", "stream", 10.0, "bad_signature"),
    ],
)
def test_refusals_say_why(token: str, purpose: str, now_s: float, reason: str) -> None:
    with pytest.raises(TokenRejected) as refused:
        verify_url_token(KEY, token, purpose=purpose, now_s=now_s)
    assert refused.value.reason == reason


def test_a_tampered_field_breaks_the_signature() -> None:
    payload, _, signature = _token().partition(".")
    forged = sign_url_token(KEY, purpose="stream", fields={"call_sid": "CA2", "tenant": "acme"}, expires_at_s=1e3)
    with pytest.raises(TokenRejected):
        verify_url_token(KEY, forged.partition(".")[0] + "." + signature, purpose="stream", now_s=10.0)

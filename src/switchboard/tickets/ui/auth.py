"""Who is asking: roles, password hashing (Argon2id), API keys, signed session cookies. Pure apart from
the deliberate CPU cost of Argon2 (callers run `verify_password` in a thread).

Roles, from least to most: `viewer` (transcripts, caller masked), `developer` (adds tool arguments and
results, latency breakdown, trace links, export), `admin` (adds managing the tenant's users and keys);
an `operator` sees every tenant with admin rights; the service token is an operator too.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TENANT_ROLES = ("viewer", "developer", "admin")
OPERATOR = "operator"
_RANK = {"viewer": 0, "developer": 1, "admin": 2, OPERATOR: 3}

API_KEY_PREFIX = "sbk_"
_COOKIE_KEY_CONTEXT = b"switchboard dashboard session v1"

# argon2-cffi's defaults are RFC 9106's second recommended option (Argon2id, 64 MiB, 3 passes).
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so a miss costs as much as a wrong password."""
    hashed: str = _hasher.hash(secrets.token_urlsafe(16))
    return hashed


@dataclass(frozen=True, slots=True)
class Principal:
    """The credential behind a request. `tenant` None means every tenant (operator, service token)."""

    kind: str  # "user", "api_key" or "service"
    role: str
    tenant: str | None
    name: str
    """The user's email, the key's label, or "service": what the audit log records."""
    user_id: int | None = None
    csrf_token: str | None = None
    session_id: int | None = None

    @property
    def is_every_tenant(self) -> bool:
        return self.tenant is None

    def has_role(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    @property
    def sees_tool_details(self) -> bool:
        """Tool arguments and results, latency breakdown and trace links."""
        return self.has_role("developer")

    @property
    def may_export(self) -> bool:
        return self.has_role("developer")

    @property
    def sees_full_numbers(self) -> bool:
        """The caller's full number on a callback ticket (a viewer sees it masked)."""
        return self.has_role("developer")

    @property
    def may_manage(self) -> bool:
        return self.has_role("admin")


def hash_password(password: str) -> str:
    """Argon2id, with a fresh salt. Takes about 50 ms of CPU and 64 MiB: run it off the event loop."""
    hashed: str = _hasher.hash(password)
    return hashed


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches. With `password_hash` None, spends the same time and says False."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_api_key() -> tuple[str, str, str]:
    """(key shown once, its display prefix, its SHA-256 hex to store)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(API_KEY_PREFIX) + 6], hash_token(key)


def hash_token(token: str) -> str:
    """SHA-256 hex: enough for 256-bit random tokens (API keys, session tokens), which no one can guess."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def _cookie_key(session_secret: str) -> bytes:
    return hmac.new(session_secret.encode(), _COOKIE_KEY_CONTEXT, hashlib.sha256).digest()


def sign_cookie(session_secret: str, token: str) -> str:
    """`token.signature`: a cookie another deployment (another secret) cannot forge or reuse."""
    signature = hmac.new(_cookie_key(session_secret), token.encode(), hashlib.sha256).hexdigest()
    return f"{token}.{signature}"


def unsign_cookie(session_secret: str, value: str) -> str | None:
    """The token of a cookie this deployment signed, or None."""
    token, _, signature = value.rpartition(".")
    if not token or len(value) > 200:
        return None
    expected = hmac.new(_cookie_key(session_secret), token.encode(), hashlib.sha256).hexdigest()
    return token if hmac.compare_digest(signature.encode(), expected.encode()) else None

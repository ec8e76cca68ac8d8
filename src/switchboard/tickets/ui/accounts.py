"""Users, API keys, sign-in sessions and the audit log in the App server's database.

Shared by `switchboard users|keys` (cli) and the dashboard. Every change is one transaction and writes
its audit event in it. Lookups by credential (`find_api_key`, `find_session`) run on an unscoped session:
they are how the tenant is found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.tickets.ui.auth import (
    OPERATOR,
    TENANT_ROLES,
    hash_token,
    new_api_key,
    new_csrf_token,
    new_session_token,
)
from switchboard.tickets.ui.errors import AccountError
from switchboard.tickets.ui.models import ApiKey, AuditEvent, UiSession, User

_EMAIL = re.compile(r"^[^@\s]{1,200}@[^@\s]{1,118}\.[^@\s]{1,60}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
MIN_PASSWORD_CHARS = 10


def normalise_email(email: str) -> str:
    """Lower-cased and trimmed. Raises: AccountError when it does not look like an email address."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AccountError("the email address is not valid")
    return email


def check_tenant_role(tenant: str, role: str) -> None:
    """Raises: AccountError for a malformed tenant key or an unknown role."""
    if not _TENANT.match(tenant):
        raise AccountError(f"tenant {tenant!r} is not a valid tenant key")
    if role not in TENANT_ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(TENANT_ROLES)}")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > 1000:
        raise AccountError("the password is longer than 1000 characters")


def audit(
    session: AsyncSession, *, at: datetime, actor: str, action: str, tenant: str | None,
    subject: str | None = None, client_ip: str | None = None, detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the session's current transaction."""
    session.add(AuditEvent(at=at, tenant=tenant, actor=actor, action=action, subject=subject,
                           client_ip=client_ip, detail=detail))


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str
    """The key itself: shown once, never stored."""


class AccountStore:
    """Changes to users and keys. On a scoped session it sees (and changes) one tenant only."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_user(
        self, *, email: str, tenant: str | None, role: str, password_hash: str, now: datetime, actor: str,
    ) -> User:
        """Raises: AccountError when the email is taken or the tenant or role is invalid."""
        email = normalise_email(email)
        if tenant is None:
            role = OPERATOR
        else:
            check_tenant_role(tenant, role)
        user = User(email=email, tenant=tenant, role=role, password_hash=password_hash, created_at=now)
        try:
            async with self._session.begin():
                self._session.add(user)
                await self._session.flush()
                audit(self._session, at=now, actor=actor, action="user.added", tenant=tenant, subject=email,
                      detail={"role": role})
        except IntegrityError:
            raise AccountError(f"a user with email {email} already exists") from None
        return user

    async def remove_user(self, email: str, *, now: datetime, actor: str) -> User:
        """Remove a user and end their sessions at once. Raises: AccountError when there is no such user."""
        email = email.strip().lower()
        async with self._session.begin():
            user = await self._session.scalar(select(User).where(User.email == email))
            if user is None:
                raise AccountError(f"no user with email {email}")
            await self._session.execute(delete(UiSession).where(UiSession.user_id == user.id))
            await self._session.delete(user)
            audit(self._session, at=now, actor=actor, action="user.removed", tenant=user.tenant, subject=email)
        return user

    async def list_users(self) -> list[User]:
        async with self._session.begin():
            return list(await self._session.scalars(select(User).order_by(User.tenant, User.email)))

    async def create_key(self, *, tenant: str, role: str, name: str | None, now: datetime, actor: str) -> CreatedKey:
        """Raises: AccountError for a bad tenant, role or name."""
        check_tenant_role(tenant, role)
        if name is not None and len(name) > 200:
            raise AccountError("the key name is longer than 200 characters")
        secret, prefix, key_hash = new_api_key()
        key = ApiKey(tenant=tenant, role=role, name=name, key_prefix=prefix, key_hash=key_hash, created_at=now)
        async with self._session.begin():
            self._session.add(key)
            await self._session.flush()
            audit(self._session, at=now, actor=actor, action="key.created", tenant=tenant, subject=str(key.id),
                  detail={"role": role, "name": name})
        return CreatedKey(key=key, secret=secret)

    async def revoke_key(self, key_id: int, *, now: datetime, actor: str) -> ApiKey:
        """Raises: AccountError when there is no such key or it is already revoked."""
        async with self._session.begin():
            key = await self._session.scalar(select(ApiKey).where(ApiKey.id == key_id))
            if key is None:
                raise AccountError(f"no API key with id {key_id}")
            if key.revoked_at is not None:
                raise AccountError(f"API key {key_id} is already revoked")
            key.revoked_at = now
            audit(self._session, at=now, actor=actor, action="key.revoked", tenant=key.tenant, subject=str(key_id))
        return key

    async def list_keys(self) -> list[ApiKey]:
        async with self._session.begin():
            return list(await self._session.scalars(select(ApiKey).order_by(ApiKey.id)))

    async def recent_audit(self, limit: int = 100) -> list[AuditEvent]:
        async with self._session.begin():
            query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            return list(await self._session.scalars(query))


async def find_api_key(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """A key that is not revoked, by the hash of the presented key."""
    async with session.begin():
        return await session.scalar(
            select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )


async def find_session(session: AsyncSession, token_hash: str, *, now: datetime) -> tuple[UiSession, User] | None:
    async with session.begin():
        row = (
            await session.execute(
                select(UiSession, User)
                .join(User, User.id == UiSession.user_id)
                .where(UiSession.token_hash == token_hash, UiSession.expires_at > now)
            )
        ).one_or_none()
    return None if row is None else (row[0], row[1])


async def find_user_for_sign_in(session: AsyncSession, email: str) -> User | None:
    async with session.begin():
        return await session.scalar(select(User).where(User.email == email.strip().lower()))


async def recent_failed_sign_ins(session: AsyncSession, *, email: str, client_ip: str, since: datetime) -> tuple[int, int]:
    """(failures for this email, failures from this address) since `since`: what the rate limit counts."""
    async with session.begin():
        by_email = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "sign_in.failed", AuditEvent.subject == email, AuditEvent.at > since
            )
        )
        by_ip = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "sign_in.failed", AuditEvent.client_ip == client_ip, AuditEvent.at > since
            )
        )
    return int(by_email or 0), int(by_ip or 0)


async def record_sign_in(
    session: AsyncSession, *, user: User | None, email: str, succeeded: bool, client_ip: str, now: datetime,
    ttl: timedelta,
) -> str | None:
    """Audit a sign-in attempt; on success delete expired sessions (anyone's), open a session and return
    its token (for the cookie)."""
    async with session.begin():
        tenant = user.tenant if user is not None else None
        if not succeeded or user is None:
            audit(session, at=now, actor=email, action="sign_in.failed", tenant=tenant, subject=email,
                  client_ip=client_ip)
            return None
        # Sessions past their expiry can never be used again: each sign-in clears them out.
        await session.execute(delete(UiSession).where(UiSession.expires_at <= now))
        token = new_session_token()
        session.add(UiSession(token_hash=hash_token(token), user_id=user.id, csrf_token=new_csrf_token(),
                              created_at=now, expires_at=now + ttl))
        audit(session, at=now, actor=email, action="sign_in.succeeded", tenant=tenant, subject=email,
              client_ip=client_ip)
        return token


async def end_session(session: AsyncSession, *, session_id: int, actor: str, tenant: str | None, now: datetime) -> None:
    async with session.begin():
        await session.execute(delete(UiSession).where(UiSession.id == session_id))
        audit(session, at=now, actor=actor, action="sign_out", tenant=tenant, subject=actor)

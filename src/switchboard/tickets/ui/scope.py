"""Tenant isolation: the one dependency every dashboard and read-API route uses.

`api_tenant_scope` (a bearer: the service token or a tenant API key) and `ui_tenant_scope` (a signed
session cookie) resolve who is asking and yield a `TenantScope` holding a database session that can see
that tenant's rows only. The filter is added to every ORM statement the session runs, by
`with_loader_criteria` in a `do_orm_execute` hook, so no query writes its own tenant WHERE. A scoped
session that was not told its tenant refuses to run anything (fail closed). Tickets, messages, sessions
and audit rows belong to a tenant through their call or their user.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import event, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from switchboard.tickets.errors import Unauthorized
from switchboard.tickets.integrations.models import IntegrationDelivery, IntegrationEndpoint
from switchboard.tickets.models import Conversation, Message, Ticket
from switchboard.tickets.ui.accounts import find_api_key, find_session
from switchboard.tickets.ui.auth import OPERATOR, Principal, hash_token, unsign_cookie
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import SignInRequired
from switchboard.tickets.ui.models import ApiKey, AuditEvent, UiSession, User

SESSION_COOKIE = "sb_session"
_SCOPE_KEY = "switchboard_tenant_scope"
_EVERY_TENANT = object()


class TenantScopedSession(Session):
    """A session whose every ORM statement is limited to `info[_SCOPE_KEY]`'s tenant."""


class ScopeMissing(RuntimeError):
    """A scoped session ran a statement before it was told its tenant: a bug, never a silent full read."""


# The conversation a message or ticket belongs to, under its own name so that a criteria inside a query
# on conversations (a call's "has a ticket") does not correlate to the outer row.
_OWNER = Conversation.__table__.alias("owner_conversation")


def _criteria(tenant: str) -> list[Any]:
    return [
        with_loader_criteria(Conversation, lambda cls: cls.tenant == tenant, include_aliases=True),
        # Correlated EXISTS on the conversation's unique keys: one index probe per row, where an
        # IN (SELECT ... WHERE tenant = ...) would build the tenant's whole set of calls per query.
        with_loader_criteria(
            Message,
            lambda cls: exists()
            .where(_OWNER.c.id == cls.conversation_id, _OWNER.c.tenant == tenant)
            .correlate_except(_OWNER),
            include_aliases=True,
        ),
        with_loader_criteria(
            Ticket,
            lambda cls: exists()
            .where(_OWNER.c.call_sid == cls.call_sid, _OWNER.c.tenant == tenant)
            .correlate_except(_OWNER),
            include_aliases=True,
        ),
        with_loader_criteria(User, lambda cls: cls.tenant == tenant, include_aliases=True),
        with_loader_criteria(ApiKey, lambda cls: cls.tenant == tenant, include_aliases=True),
        with_loader_criteria(AuditEvent, lambda cls: cls.tenant == tenant, include_aliases=True),
        with_loader_criteria(IntegrationDelivery, lambda cls: cls.tenant == tenant, include_aliases=True),
        with_loader_criteria(IntegrationEndpoint, lambda cls: cls.tenant == tenant, include_aliases=True),
        with_loader_criteria(
            UiSession,
            lambda cls: cls.user_id.in_(select(User.id).where(User.tenant == tenant)),
            include_aliases=True,
        ),
    ]


@event.listens_for(TenantScopedSession, "do_orm_execute")
def _limit_to_tenant(state: ORMExecuteState) -> None:
    scope = state.session.info.get(_SCOPE_KEY)
    if scope is None:
        raise ScopeMissing("a tenant-scoped session ran a statement before its scope was set")
    if scope is _EVERY_TENANT or state.is_column_load or state.is_relationship_load:
        return
    state.statement = state.statement.options(*_criteria(scope))


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Who is asking, and a session that sees only what they may see."""

    principal: Principal
    session: AsyncSession


async def _scoped(request: Request, principal: Principal) -> AsyncIterator[TenantScope]:
    context = dashboard_context(request)
    async with context.scoped_sessions() as session:
        session.info[_SCOPE_KEY] = _EVERY_TENANT if principal.is_every_tenant else principal.tenant
        yield TenantScope(principal=principal, session=session)


async def _bearer_principal(request: Request) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    context = dashboard_context(request)
    if scheme.lower() == "bearer" and token:
        # compare_digest on bytes: the time taken must not depend on how much of the token matched.
        if hmac.compare_digest(token.encode(), context.service_token):
            return Principal(kind="service", role=OPERATOR, tenant=None, name="service")
        async with context.sessions() as session:
            key = await find_api_key(session, hash_token(token))
        if key is not None:
            return Principal(kind="api_key", role=key.role, tenant=key.tenant, name=f"key {key.id}")
    raise Unauthorized("a valid service token or API key is required (Authorization: Bearer ...)")


async def ui_principal(request: Request) -> Principal | None:
    """The signed-in person of a dashboard request, or None."""
    context = dashboard_context(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    token = unsign_cookie(context.session_secret, cookie) if cookie else None
    if token is None:
        return None
    async with context.sessions() as session:
        found = await find_session(session, hash_token(token), now=context.clock.wall())
    if found is None:
        return None
    ui_session, user = found
    return Principal(
        kind="user", role=user.role, tenant=user.tenant, name=user.email, user_id=user.id,
        csrf_token=ui_session.csrf_token, session_id=ui_session.id,
    )


async def api_tenant_scope(request: Request) -> AsyncIterator[TenantScope]:
    """For /api/* reads. Raises: Unauthorized without a valid bearer."""
    principal = await _bearer_principal(request)
    async for scope in _scoped(request, principal):
        yield scope


async def ui_tenant_scope(request: Request) -> AsyncIterator[TenantScope]:
    """For /ui/* pages. Raises: SignInRequired (a redirect to /ui/login) without a valid session."""
    principal = await ui_principal(request)
    if principal is None:
        raise SignInRequired(request.url.path)
    async for scope in _scoped(request, principal):
        yield scope


TENANT_SCOPE_DEPENDENCIES = (api_tenant_scope, ui_tenant_scope)

"""Queries of the AI server: tenants by route or key, their tools and knowledge chunks, and call charges.

One session per request, nothing cached: a `tenants load` is visible to the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.knowledge.business_hours import BusinessHours, parse_business_hours
from switchboard.knowledge.errors import TenantNotFound, ToolNotFound
from switchboard.knowledge.models import (
    CallCharge,
    KnowledgeChunk,
    KnowledgeDocument,
    Tenant,
    TenantRoute,
    TenantTool,
)


@dataclass(frozen=True, slots=True)
class TenantProfile:
    key: str
    company: str
    greeting: str
    instructions: str
    voice: dict[str, Any]
    transcriber: str
    business_hours: BusinessHours | None
    transfer: dict[str, Any] | None
    credits: int
    turn_detection: dict[str, Any] | None = None
    keypad: dict[str, str] | None = None
    max_concurrent_calls: int | None = None

    @property
    def has_credits(self) -> bool:
        return self.credits > 0


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str
    parameters: dict[str, Any]
    http: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChargeResult:
    key: str
    call_sid: str
    minutes: int  # what this call_sid was charged the first time
    credits_remaining: int  # the tenant's balance now
    already_charged: bool


@dataclass(frozen=True, slots=True)
class StoredChunk:
    title: str
    source: str
    heading: str
    text: str
    embedding: bytes


def _profile(tenant: Tenant) -> TenantProfile:
    return TenantProfile(
        key=tenant.key,
        company=tenant.company,
        greeting=tenant.greeting,
        instructions=tenant.instructions,
        voice=dict(tenant.voice),
        transcriber=tenant.transcriber,
        business_hours=parse_business_hours(tenant.business_hours) if tenant.business_hours is not None else None,
        transfer=dict(tenant.transfer) if tenant.transfer else None,
        credits=tenant.credits,
        turn_detection=dict(tenant.turn_detection) if tenant.turn_detection else None,
        keypad=dict(tenant.keypad) if tenant.keypad else None,
        max_concurrent_calls=tenant.max_concurrent_calls,
    )


async def resolve_tenant(
    session: AsyncSession, *, sip_domain: str | None, to: str | None, application_sid: str | None
) -> TenantProfile:
    """SIP domain (exact, case-insensitive), then To number, then application SID; the first match wins.

    Raises:
        TenantNotFound: nothing matched.
    """
    candidates = [
        ("sip_domain", sip_domain.strip().lower() if sip_domain else None),
        ("number", to.strip() if to else None),
        ("application_sid", application_sid.strip() if application_sid else None),
    ]
    for kind, value in candidates:
        if not value:
            continue
        tenant = await session.scalar(
            select(Tenant).join(TenantRoute).where(TenantRoute.kind == kind, TenantRoute.value == value)
        )
        if tenant is not None:
            return _profile(tenant)
    raise TenantNotFound("no tenant is routed for this sip_domain, to or application_sid")


async def get_tenant(session: AsyncSession, key: str) -> TenantProfile:
    """Raises: TenantNotFound."""
    tenant = await session.get(Tenant, key)
    if tenant is None:
        raise TenantNotFound(f"no tenant with bot_profile_key '{key}'")
    return _profile(tenant)


async def list_tools(session: AsyncSession, key: str) -> list[ToolDefinition]:
    """The tenant's own tools in file order. Raises: TenantNotFound."""
    await get_tenant(session, key)
    rows = await session.scalars(select(TenantTool).where(TenantTool.tenant_key == key).order_by(TenantTool.position))
    return [ToolDefinition(t.name, t.description, dict(t.parameters), dict(t.http)) for t in rows]


async def get_tool(session: AsyncSession, key: str, name: str) -> ToolDefinition:
    """Raises: TenantNotFound, ToolNotFound."""
    await get_tenant(session, key)
    tool = await session.scalar(select(TenantTool).where(TenantTool.tenant_key == key, TenantTool.name == name))
    if tool is None:
        raise ToolNotFound(f"tenant '{key}' has no tool '{name}'")
    return ToolDefinition(tool.name, tool.description, dict(tool.parameters), dict(tool.http))


async def list_chunks(session: AsyncSession, key: str) -> list[StoredChunk]:
    """All knowledge chunks of one tenant (and only that tenant), in document order."""
    rows = await session.execute(
        select(KnowledgeDocument.title, KnowledgeDocument.source, KnowledgeChunk.heading, KnowledgeChunk.text,
               KnowledgeChunk.embedding)
        .join(KnowledgeDocument, KnowledgeChunk.document_id == KnowledgeDocument.document_id)
        .where(KnowledgeChunk.tenant_key == key, KnowledgeDocument.tenant_key == key)
        .order_by(KnowledgeDocument.document_id, KnowledgeChunk.ordinal)
    )
    return [StoredChunk(title, source, heading, text, bytes(embedding)) for title, source, heading, text, embedding in rows]


async def charge_call(
    session: AsyncSession, *, key: str, call_sid: str, minutes: int, duration_s: float, now: datetime
) -> ChargeResult:
    """Charge `minutes` to the tenant once per `call_sid`; a repeat changes nothing and reports the first charge.

    One transaction inserts the charge row (unique per tenant and call_sid) and then decrements the
    balance with a single UPDATE, clamped at 0, so concurrent charges of one tenant serialise on its
    row and none is lost. Inserting first matters: on SQLite the transaction takes the write lock
    before it reads anything, and on PostgreSQL a second request for the same call waits on the
    unique index until the first commits, then finds its row.

    The session must not be in a transaction yet.

    Raises:
        TenantNotFound: no tenant with this key.
    """
    try:
        async with session.begin():
            await session.execute(
                insert(CallCharge).values(
                    tenant_key=key, call_sid=call_sid, minutes=minutes, duration_s=duration_s, charged_at=now
                )
            )
            credits_remaining = await session.scalar(
                update(Tenant)
                .where(Tenant.key == key)
                .values(credits=case((Tenant.credits > minutes, Tenant.credits - minutes), else_=0))
                .returning(Tenant.credits)
            )
            if credits_remaining is None:
                raise TenantNotFound(f"no tenant with bot_profile_key '{key}'")
    except IntegrityError:
        # The call was charged already, or (foreign key) the tenant does not exist.
        existing = await session.scalar(
            select(CallCharge.minutes).where(CallCharge.tenant_key == key, CallCharge.call_sid == call_sid)
        )
        balance = await session.scalar(select(Tenant.credits).where(Tenant.key == key))
        await session.rollback()
        if balance is None:
            raise TenantNotFound(f"no tenant with bot_profile_key '{key}'") from None
        if existing is None:
            raise
        return ChargeResult(key, call_sid, existing, balance, already_charged=True)
    return ChargeResult(key, call_sid, minutes, credits_remaining, already_charged=False)

"""Per-endpoint delivery figures: sent, failed, pending, last error, disabled (for the API and dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.tickets.integrations.models import (
    DELIVERED,
    FAILED,
    PENDING,
    IntegrationDelivery,
    IntegrationEndpoint,
)


@dataclass(frozen=True, slots=True)
class EndpointStats:
    tenant: str
    endpoint_key: str
    kind: str
    label: str
    sent: int
    failed: int
    pending: int
    in_flight: int  # pending and claimed by a worker now (or by one that died, until its lease ends)
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None


async def endpoint_stats(session: AsyncSession, *, tenant: str | None) -> list[EndpointStats]:
    """Every endpoint that has had a delivery, by tenant then label; `tenant` None: all tenants.

    Call first in its transaction: on PostgreSQL the three reads share one snapshot (REPEATABLE READ),
    so a delivery recorded meanwhile shows in all of them or in none."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    counts_query = select(
        IntegrationDelivery.tenant, IntegrationDelivery.endpoint_key, IntegrationDelivery.status, func.count()
    ).group_by(IntegrationDelivery.tenant, IntegrationDelivery.endpoint_key, IntegrationDelivery.status)
    endpoints_query = select(IntegrationEndpoint).order_by(IntegrationEndpoint.tenant, IntegrationEndpoint.label)
    if tenant is not None:
        counts_query = counts_query.where(IntegrationDelivery.tenant == tenant)
        endpoints_query = endpoints_query.where(IntegrationEndpoint.tenant == tenant)
    claimed_query = (
        select(IntegrationDelivery.tenant, IntegrationDelivery.endpoint_key, func.count())
        .where(IntegrationDelivery.status == PENDING, IntegrationDelivery.lease_token.is_not(None))
        .group_by(IntegrationDelivery.tenant, IntegrationDelivery.endpoint_key)
    )
    if tenant is not None:
        claimed_query = claimed_query.where(IntegrationDelivery.tenant == tenant)
    counts: dict[tuple[str, str, str], int] = {}
    for row_tenant, key, status, count in await session.execute(counts_query):
        counts[(row_tenant, key, status)] = int(count)
    claimed = {(row_tenant, key): int(count) for row_tenant, key, count in await session.execute(claimed_query)}
    return [
        EndpointStats(
            tenant=e.tenant, endpoint_key=e.endpoint_key, kind=e.kind, label=e.label,
            # Deliveries deleted after the retention still count (retention.py keeps the totals).
            sent=counts.get((e.tenant, e.endpoint_key, DELIVERED), 0) + e.pruned_delivered,
            failed=counts.get((e.tenant, e.endpoint_key, FAILED), 0) + e.pruned_failed,
            pending=counts.get((e.tenant, e.endpoint_key, PENDING), 0),
            in_flight=claimed.get((e.tenant, e.endpoint_key), 0),
            last_error=e.last_error, last_error_at=e.last_error_at, last_success_at=e.last_success_at,
            disabled_at=e.disabled_at, disabled_reason=e.disabled_reason,
        )
        for e in await session.scalars(endpoints_query)
    ]

"""A ticket's helpdesk copies (`external`, contract §3) and helpdesk errors, read from its deliveries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.tickets.integrations.config import HELPDESKS
from switchboard.tickets.integrations.models import DELIVERED, FAILED, IntegrationDelivery
from switchboard.tickets.schemas import ExternalRef, IntegrationProblem, TicketView


async def add_external(session: AsyncSession, views: list[TicketView]) -> list[TicketView]:
    """Fill `external` and `integration_errors` of each view (in place; also returned)."""
    if not views:
        return views
    rows = await session.scalars(
        select(IntegrationDelivery)
        .where(IntegrationDelivery.ticket_id.in_([v.id for v in views]), IntegrationDelivery.kind.in_(HELPDESKS))
        .order_by(IntegrationDelivery.id)
    )
    by_ticket: dict[int, list[IntegrationDelivery]] = {}
    for row in rows:
        assert row.ticket_id is not None
        by_ticket.setdefault(row.ticket_id, []).append(row)
    for view in views:
        for row in by_ticket.get(view.id, []):
            system = row.kind
            if row.status == DELIVERED and row.external_id is not None:
                view.external.append(ExternalRef(system=system, id=row.external_id, url=row.external_url))  # type: ignore[arg-type]
            elif row.last_error is not None:
                view.integration_errors.append(IntegrationProblem(
                    system=system,  # type: ignore[arg-type]
                    status="failed" if row.status == FAILED else "retrying",
                    error=row.last_error,
                    at=row.last_attempt_at,
                ))
    return views

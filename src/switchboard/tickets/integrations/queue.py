"""The delivery queue: events fanned out into deliveries, and due deliveries claimed under a lease.

Claims are taken in one short transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several App
servers share the queue; SQLite serialises writers); a claimed row is nobody else's until its lease
ends. Pure database work: no HTTP here (delivery.py sends).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.logs import get_logger
from switchboard.tickets.integrations.config import HELPDESKS, Endpoint, IntegrationsDirectory
from switchboard.tickets.integrations.metrics import DeliveryMetrics
from switchboard.tickets.integrations.models import (
    EVENT_DONE,
    EVENT_NEW,
    EVENT_SKIPPED,
    PENDING,
    IntegrationDelivery,
    IntegrationEndpoint,
    IntegrationEvent,
)
from switchboard.tickets.models import Conversation

log = get_logger("switchboard.tickets.integrations")

ENDED = "ended"
FAN_OUT_BATCH = 100
# An event whose call never shows a tenant (its conversation never opened) is dropped after this.
TENANT_WAIT_S = 3600.0
RECHECK_S = 2.0


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    poll_s: float = 1.0
    timeout_s: float = 15.0
    lease_s: float = 60.0
    concurrency: int = 16
    retry_window_s: float = 26 * 3600.0
    # > 0: a callback ticket reaches the helpdesks once its call has ended (to carry the whole summary),
    # or after this long; 0: at once.
    helpdesk_wait_s: float = 0.0
    public_url: str = "http://127.0.0.1:8082"

    @property
    def effective_lease_s(self) -> float:
        # Each request of an attempt (DNS, connect, send, read) is bounded by timeout_s, and a helpdesk
        # attempt makes up to three (Zendesk: find the requester, create it, create the ticket); the
        # lease must outlast them all.
        return max(self.lease_s, 3 * self.timeout_s + 5.0)


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: int
    lease_token: str
    tenant: str
    kind: str
    endpoint_key: str
    event_type: str
    message_id: str
    call_sid: str
    ticket_id: int | None
    attempts: int
    refusals: int
    created_at: datetime
    is_ambiguous: bool
    request_body: str | None
    event_body: str
    is_endpoint_disabled: bool


class DeliveryQueue:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], directory: IntegrationsDirectory, clock: Clock,
        metrics: DeliveryMetrics, options: DeliveryOptions,
    ) -> None:
        self._sessions = sessions
        self._directory = directory
        self._clock = clock
        self._metrics = metrics
        self._options = options
        # (tenant, endpoint_key) whose integration_endpoints row is known to exist: rows are never deleted.
        self._known_endpoints: set[tuple[str, str]] = set()

    async def fan_out_once(self, claim_limit: int = 0) -> list[Claim]:
        """Turn due events into deliveries, one per endpoint configured for them.

        Up to `claim_limit` of the deliveries due at once are created already leased to this worker and
        returned as claims: the common path (an event, then its first attempt) costs one transaction less."""
        now = self._clock.wall()
        token = uuid.uuid4().hex
        leased: list[tuple[IntegrationDelivery, str]] = []
        async with self._sessions() as session, session.begin():
            query = (
                select(IntegrationEvent)
                .where(IntegrationEvent.status == EVENT_NEW, IntegrationEvent.next_check_at <= now)
                .order_by(IntegrationEvent.id)
                .limit(FAN_OUT_BATCH)
            )
            if is_postgresql(session):
                query = query.with_for_update(skip_locked=True)
            events = list(await session.scalars(query))
            for event in events:
                for delivery in await self._fan_out(session, event, now):
                    if len(leased) < claim_limit and delivery.next_attempt_at <= now:
                        delivery.lease_until = now + timedelta(seconds=self._options.effective_lease_s)
                        delivery.lease_token = token
                        leased.append((delivery, event.body))
            await session.flush()
            created = session.sync_session.info.pop("known_endpoints", [])
        self._known_endpoints.update(created)
        return [
            Claim(
                delivery_id=d.id, lease_token=token, tenant=d.tenant, kind=d.kind, endpoint_key=d.endpoint_key,
                event_type=d.event_type, message_id=d.message_id, call_sid=d.call_sid, ticket_id=d.ticket_id,
                attempts=0, refusals=0, created_at=d.created_at, is_ambiguous=False, request_body=None,
                event_body=body, is_endpoint_disabled=False,
            )
            for d, body in leased
        ]

    async def _fan_out(self, session: AsyncSession, event: IntegrationEvent, now: datetime) -> list[IntegrationDelivery]:
        tenant = event.tenant or await session.scalar(
            select(Conversation.tenant).where(Conversation.call_sid == event.call_sid)
        )
        if tenant is None:
            if (now - event.occurred_at).total_seconds() > TENANT_WAIT_S:
                event.status = EVENT_SKIPPED
                log.warning("integration_event.tenant_unknown", event_type=event.event_type, call_sid=event.call_sid)
            else:
                event.next_check_at = now + timedelta(seconds=RECHECK_S)
            return []
        event.tenant = tenant
        event.status = EVENT_SKIPPED  # done once it has a delivery (below); retention.py tells them apart
        integrations = self._directory.get(tenant)
        endpoints = integrations.endpoints_for(event.event_type) if integrations is not None else []
        if not endpoints:
            return []
        self._metrics.events_recorded.labels(event_type=event.event_type).inc()
        disabled = set(await session.scalars(
            select(IntegrationEndpoint.endpoint_key).where(
                IntegrationEndpoint.tenant == tenant, IntegrationEndpoint.disabled_at.is_not(None)
            )
        ))
        call_has_ended: bool | None = None
        deliveries: list[IntegrationDelivery] = []
        for endpoint in endpoints:
            await self._ensure_endpoint_row(session, tenant, endpoint)
            if endpoint.endpoint_key in disabled:
                continue
            due = now
            if endpoint.kind in HELPDESKS and self._options.helpdesk_wait_s > 0:
                if call_has_ended is None:
                    # Locked: the call's end either committed before (we see it) or waits for this fan-out
                    # and then makes these deliveries due (events.EventRecorder.call_ended).
                    status = await session.scalar(
                        select(Conversation.status).where(Conversation.call_sid == event.call_sid).with_for_update()
                    )
                    call_has_ended = status == ENDED
                if not call_has_ended:
                    due = now + timedelta(seconds=self._options.helpdesk_wait_s)
            delivery = IntegrationDelivery(
                event_id=event.id, tenant=tenant, kind=endpoint.kind, endpoint_key=endpoint.endpoint_key,
                event_type=event.event_type, message_id="msg_" + uuid.uuid4().hex, call_sid=event.call_sid,
                ticket_id=event.ticket_id, status=PENDING, attempts=0, refusals=0, created_at=event.occurred_at,
                next_attempt_at=due, is_ambiguous=False,
            )
            session.add(delivery)
            deliveries.append(delivery)
        if deliveries:
            event.status = EVENT_DONE
        return deliveries

    async def _ensure_endpoint_row(self, session: AsyncSession, tenant: str, endpoint: Endpoint) -> None:
        if (tenant, endpoint.endpoint_key) in self._known_endpoints:
            return
        insert = postgresql.insert if is_postgresql(session) else sqlite.insert
        await session.execute(
            insert(IntegrationEndpoint)
            .values(tenant=tenant, endpoint_key=endpoint.endpoint_key, kind=endpoint.kind, label=endpoint.label)
            .on_conflict_do_nothing(index_elements=["tenant", "endpoint_key"])
        )
        # Known only once this transaction commits; a rollback just means one more harmless insert.
        session.sync_session.info.setdefault("known_endpoints", []).append((tenant, endpoint.endpoint_key))

    # -- claiming -----------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to `limit` due deliveries to this worker, oldest due first."""
        now = self._clock.wall()
        token = uuid.uuid4().hex
        async with self._sessions() as session, session.begin():
            due = (
                select(IntegrationDelivery.id)
                .where(
                    IntegrationDelivery.status == PENDING,
                    IntegrationDelivery.next_attempt_at <= now,
                    (IntegrationDelivery.lease_until.is_(None)) | (IntegrationDelivery.lease_until < now),
                )
                .order_by(IntegrationDelivery.next_attempt_at, IntegrationDelivery.id)
                .limit(limit)
            )
            if is_postgresql(session):
                due = due.with_for_update(skip_locked=True)
            ids = list(await session.scalars(due))
            if not ids:
                return []
            await session.execute(
                update(IntegrationDelivery)
                .where(IntegrationDelivery.id.in_(ids))
                .values(lease_until=now + timedelta(seconds=self._options.effective_lease_s), lease_token=token)
            )
            rows = await session.execute(
                select(IntegrationDelivery, IntegrationEvent.body, IntegrationEndpoint.disabled_at)
                .join(IntegrationEvent, IntegrationEvent.id == IntegrationDelivery.event_id)
                .outerjoin(IntegrationEndpoint, (IntegrationEndpoint.tenant == IntegrationDelivery.tenant)
                           & (IntegrationEndpoint.endpoint_key == IntegrationDelivery.endpoint_key))
                .where(IntegrationDelivery.id.in_(ids), IntegrationDelivery.lease_token == token)
                .order_by(IntegrationDelivery.next_attempt_at, IntegrationDelivery.id)
            )
            return [
                Claim(
                    delivery_id=d.id, lease_token=token, tenant=d.tenant, kind=d.kind, endpoint_key=d.endpoint_key,
                    event_type=d.event_type, message_id=d.message_id, call_sid=d.call_sid, ticket_id=d.ticket_id,
                    attempts=d.attempts, refusals=d.refusals, created_at=d.created_at, is_ambiguous=d.is_ambiguous,
                    request_body=d.request_body, event_body=body, is_endpoint_disabled=disabled_at is not None,
                )
                for d, body, disabled_at in rows
            ]


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"

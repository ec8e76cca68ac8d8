"""Retention of the integrations' tables: finished webhook deliveries and their events are deleted later.

Runs beside the delivery worker in the App server's integrations TaskGroup, once at start-up and then every
`interval_s` of the injected clock. Each batch is one short transaction, so the queue's own writes interleave.
It never deletes a pending delivery (however old), an event still to fan out, or a helpdesk delivery: the
ticket's `external` list and its helpdesk errors are read from those (contract §9), and tickets are kept.
The endpoints' `sent` and `failed` figures count pruned deliveries through per-endpoint totals.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.logs import get_logger
from switchboard.tickets.integrations.config import WEBHOOK
from switchboard.tickets.integrations.metrics import DeliveryMetrics
from switchboard.tickets.integrations.models import (
    DELIVERED,
    EVENT_DONE,
    EVENT_SKIPPED,
    FAILED,
    IntegrationDelivery,
    IntegrationEndpoint,
    IntegrationEvent,
)

log = get_logger("switchboard.tickets.integrations")

PRUNE_BATCH = 500
PRUNE_INTERVAL_S = 3600.0
RETRY_AFTER_ERROR_S = 60.0
# Any number that no other Switchboard service uses as an advisory lock key (database.py has the migrations').
_PRUNE_LOCK_KEY = 0x5B_0A_9A


@dataclass(frozen=True, slots=True)
class PruneCounts:
    deliveries: int
    events: int


class DeliveryRetention:
    """Deletes what finished more than `retention_days` ago, in batches of `batch_size` rows per table."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], clock: Clock, metrics: DeliveryMetrics,
        retention_days: int, batch_size: int = PRUNE_BATCH, interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._metrics = metrics
        self._retention = timedelta(days=retention_days)
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._is_stopping = False
        self._wake = asyncio.Event()
        self._is_database_down = False

    def stop(self) -> None:
        """Start no new batch; the loop in `run` returns after the one in progress."""
        self._is_stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Prune now and then every `interval_s` (clock seconds) until `stop`; a database outage is waited out."""
        while not self._is_stopping:
            delay_s = self._interval_s
            try:
                await self.prune()
                if self._is_database_down:
                    self._is_database_down = False
                    log.info("integration_retention.database_available")
            except (SQLAlchemyError, OSError) as exc:
                delay_s = RETRY_AFTER_ERROR_S
                if not self._is_database_down:  # once per outage
                    self._is_database_down = True
                    log.warning("integration_retention.database_unavailable", error_type=type(exc).__name__)
            await self._wait_for_next_run(delay_s)

    async def _wait_for_next_run(self, delay_s: float) -> None:
        self._wake.clear()
        if self._is_stopping:
            return
        timer = self._clock.call_at(self._clock.now() + delay_s, self._wake.set)
        try:
            # Bounded by the clock's timer (or stop()); not a network wait.
            await self._wake.wait()
        finally:
            timer.cancel()

    async def prune(self) -> PruneCounts:
        """Delete, batch by batch, finished webhook deliveries and events older than the retention.

        Returns the totals of this run; logs them and counts them in the metrics."""
        started_s = self._clock.now()
        cutoff = self._clock.wall() - self._retention
        deliveries = events = batches = 0
        has_more = True
        while has_more and not self._is_stopping:
            batch_deliveries, batch_events, has_more = await self._prune_batch(cutoff)
            deliveries += batch_deliveries
            events += batch_events
            batches += 1
        total = PruneCounts(deliveries, events)
        if total.deliveries:
            self._metrics.rows_pruned.labels(table="integration_deliveries").inc(total.deliveries)
        if total.events:
            self._metrics.rows_pruned.labels(table="integration_events").inc(total.events)
        log.info(
            "integration_retention.pruned", deliveries=total.deliveries, events=total.events, batches=batches,
            retention_days=self._retention.days, duration_ms=round((self._clock.now() - started_s) * 1000),
        )
        return total

    async def _prune_batch(self, cutoff: datetime) -> tuple[int, int, bool]:
        """One transaction: (deliveries deleted, events deleted, whether a full batch suggests more)."""
        async with self._sessions() as session, session.begin():
            # One App server prunes at a time; the others find the lock taken and leave it to that one.
            if session.get_bind().dialect.name == "postgresql" and not await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _PRUNE_LOCK_KEY}
            ):
                return 0, 0, False
            deliveries, event_ids = await self._delete_deliveries(session, cutoff)
            events_of_deliveries = await self._delete_events_of(session, event_ids)
            skipped_events = await self._delete_skipped_events(session, cutoff)
        has_more = deliveries == self._batch_size or skipped_events == self._batch_size
        return deliveries, events_of_deliveries + skipped_events, has_more

    async def _delete_deliveries(self, session: AsyncSession, cutoff: datetime) -> tuple[int, set[int]]:
        # Delivered or given up: their rows never change again, so nothing races this delete.
        ids = list(await session.scalars(
            select(IntegrationDelivery.id)
            .where(
                IntegrationDelivery.kind == WEBHOOK,
                IntegrationDelivery.finished_at < cutoff,
                IntegrationDelivery.status.in_((DELIVERED, FAILED)),
            )
            .order_by(IntegrationDelivery.finished_at, IntegrationDelivery.id)
            .limit(self._batch_size)
        ))
        if not ids:
            return 0, set()
        deleted = (await session.execute(
            delete(IntegrationDelivery)
            .where(IntegrationDelivery.id.in_(ids))
            .returning(IntegrationDelivery.tenant, IntegrationDelivery.endpoint_key, IntegrationDelivery.status,
                       IntegrationDelivery.event_id)
        )).all()
        by_endpoint = Counter((tenant, key, status) for tenant, key, status, _ in deleted)
        for (tenant, key, status), count in by_endpoint.items():
            column = "pruned_delivered" if status == DELIVERED else "pruned_failed"
            await session.execute(
                update(IntegrationEndpoint)
                .where(IntegrationEndpoint.tenant == tenant, IntegrationEndpoint.endpoint_key == key)
                .values({column: getattr(IntegrationEndpoint, column) + count})
            )
        return len(deleted), {event_id for *_, event_id in deleted}

    async def _delete_events_of(self, session: AsyncSession, event_ids: set[int]) -> int:
        """An event goes with the last of its deliveries; one with a delivery still pending, or a helpdesk
        delivery (kept), stays. Its deliveries were all created at its time, so it is as old as they are."""
        if not event_ids:
            return 0
        result = await session.execute(
            delete(IntegrationEvent).where(
                IntegrationEvent.id.in_(event_ids),
                IntegrationEvent.status == EVENT_DONE,
                ~exists().where(IntegrationDelivery.event_id == IntegrationEvent.id),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def _delete_skipped_events(self, session: AsyncSession, cutoff: datetime) -> int:
        ids = list(await session.scalars(
            select(IntegrationEvent.id)
            .where(IntegrationEvent.status == EVENT_SKIPPED, IntegrationEvent.occurred_at < cutoff)
            .order_by(IntegrationEvent.occurred_at, IntegrationEvent.id)
            .limit(self._batch_size)
        ))
        if not ids:
            return 0
        result = await session.execute(delete(IntegrationEvent).where(IntegrationEvent.id.in_(ids)))
        return int(result.rowcount)  # type: ignore[attr-defined]

"""The delivery queue's worker: takes claims from the queue (queue.py), sends, records the outcome.

Runs in the App server's lifespan TaskGroup; the voice server and the record of a call never wait for
it. Every state lives in the database, so a restart or a crash loses nothing:

- A worker claims due rows with a lease (`lease_until`, `lease_token`) in one short transaction
  (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several App servers share the queue; SQLite serialises
  writers). Nobody else attempts a row while its lease runs, and an attempt is bounded well inside
  the lease, so no row is ever sent twice at the same time. A worker that died leaves its lease to
  expire; the row is then retried (at least once, never lost).
- The result is written fenced by the lease token: a worker that lost its lease records nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.logs import get_logger
from switchboard.outbound_http import Resolver, resolve_addresses
from switchboard.tickets.integrations import freshdesk, zendesk
from switchboard.tickets.integrations.config import (
    FRESHDESK,
    Endpoint,
    FreshdeskAccount,
    IntegrationsDirectory,
    WebhookEndpoint,
    ZendeskAccount,
)
from switchboard.tickets.integrations.helpdesk_ticket import (
    CallbackDetails,
    dashboard_url,
    transcript_summary,
)
from switchboard.tickets.integrations.metrics import DeliveryMetrics
from switchboard.tickets.integrations.models import (
    DELIVERED,
    FAILED,
    PENDING,
    IntegrationDelivery,
    IntegrationEndpoint,
)
from switchboard.tickets.integrations.policy import AttemptResult, Decision, decide, is_refusal
from switchboard.tickets.integrations.queue import Claim, DeliveryOptions, DeliveryQueue
from switchboard.tickets.integrations.webhooks import send_webhook
from switchboard.tickets.models import Conversation, Message, Ticket

log = get_logger("switchboard.tickets.integrations")

RECHECK_S = 2.0
GAUGE_INTERVAL_S = 5.0


class DeliveryWorker:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], directory: IntegrationsDirectory,
        http: httpx.AsyncClient, clock: Clock, metrics: DeliveryMetrics, options: DeliveryOptions,
        environ: Mapping[str, str], resolver: Resolver = resolve_addresses, rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._directory = directory
        self._http = http
        self._clock = clock
        self._metrics = metrics
        self._options = options
        self._environ = environ
        self._resolver = resolver
        self._rng = rng or random.Random()
        self._work = asyncio.Event()
        self._in_flight = 0
        self._is_stopping = False
        self._is_database_down = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_gauge_s: float | None = None
        self._queue = DeliveryQueue(sessions=sessions, directory=directory, clock=clock, metrics=metrics,
                                    options=options)

    def wake(self) -> None:
        """There may be new work (an event was recorded by this process); never blocks."""
        self._work.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def stop(self, timeout_s: float) -> None:
        """Claim nothing more, and wait up to timeout_s for attempts in flight (their leases cover the rest)."""
        self._is_stopping = True
        self._work.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("integration_delivery.stop_timeout", in_flight=self._in_flight)

    async def run(self) -> None:
        """Work the queue until cancelled; a database outage is logged and waited out."""
        async with asyncio.TaskGroup() as tasks:
            while not self._is_stopping:
                self._work.clear()
                # Nothing can be fanned out or sent before the tenants' integrations are known.
                claims = await self._fan_out_and_claim() if self._directory.is_loaded else []
                for claim in claims:
                    self._in_flight += 1
                    self._idle.clear()
                    tasks.create_task(self._attempt_guarded(claim), name=f"integration-delivery-{claim.delivery_id}")
                try:
                    async with asyncio.timeout(self._options.poll_s):
                        await self._work.wait()
                except TimeoutError:
                    pass

    async def _fan_out_and_claim(self) -> list[Claim]:
        """One pass over the queue: fan out new events, claim what is due (up to the free slots)."""
        claims: list[Claim] = []
        try:
            free = self._options.concurrency - self._in_flight
            claims = await self._queue.fan_out_once(claim_limit=max(0, free))
            if free - len(claims) > 0:
                claims += await self._queue.claim(free - len(claims))
            await self._update_gauges()
            if self._is_database_down:
                self._is_database_down = False
                log.info("integration_delivery.database_available")
        except (SQLAlchemyError, OSError) as exc:
            if not self._is_database_down:  # once per outage, not once per poll
                self._is_database_down = True
                log.warning("integration_delivery.database_unavailable", error_type=type(exc).__name__)
        return claims

    # -- attempts -----------------------------------------------------------------------------------

    async def _attempt_guarded(self, claim: Claim) -> None:
        try:
            await self.attempt(claim)
        except (SQLAlchemyError, OSError) as exc:
            # The lease expires and another attempt follows; the database's outage is logged once here.
            log.warning("integration_delivery.not_recorded", delivery_id=claim.delivery_id,
                        error_type=type(exc).__name__)
        except Exception:
            # One broken delivery must not end the worker (and with it the App server): log, leave the
            # row to its lease, carry on.
            log.exception("integration_delivery.crashed", delivery_id=claim.delivery_id, kind=claim.kind)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
            self._work.set()

    async def attempt(self, claim: Claim) -> None:
        """Attempt one claimed delivery and record the outcome."""
        integrations = self._directory.get(claim.tenant)
        endpoint = integrations.endpoint(claim.endpoint_key) if integrations is not None else None
        if endpoint is None:
            if not self._directory.is_loaded:
                await self._release(claim, delay_s=RECHECK_S)
                return
            result = AttemptResult(None, error="the endpoint is no longer in the tenant's integrations")
            await self._record(claim, result, Decision("give_up", reason=result.error))
            return
        if claim.is_endpoint_disabled:
            result = AttemptResult(None, error="the endpoint is disabled")
            await self._record(claim, result, Decision("give_up", reason=result.error))
            return
        result = await self._send(claim, endpoint)
        refusals = claim.refusals + (
            1 if result.is_configuration_error or (result.status_code is not None and is_refusal(result.status_code))
            else 0
        )
        decision = decide(
            result, attempts=claim.attempts + 1, refusals=refusals, created_at=claim.created_at,
            now=self._clock.wall(), retry_window_s=self._options.retry_window_s, rng=self._rng,
        )
        await self._record(claim, result, decision, refusals=refusals)

    async def _send(self, claim: Claim, endpoint: Endpoint) -> AttemptResult:
        common = {"environ": self._environ, "resolver": self._resolver, "timeout_s": self._options.timeout_s}
        if isinstance(endpoint, WebhookEndpoint):
            return await send_webhook(
                self._http, endpoint, message_id=claim.message_id, body=claim.event_body.encode(),
                timestamp_s=int(self._clock.wall().timestamp()), **common,  # type: ignore[arg-type]
            )
        body = claim.request_body or await self._prepare_helpdesk_body(claim, endpoint)
        if body is None:
            return AttemptResult(None, error="the ticket no longer exists", is_configuration_error=True)
        if isinstance(endpoint, FreshdeskAccount):
            return await freshdesk.create_ticket(
                self._http, endpoint, request_body=body.encode(), message_id=claim.message_id,
                look_first=claim.is_ambiguous, **common,  # type: ignore[arg-type]
            )
        assert isinstance(endpoint, ZendeskAccount)
        return await zendesk.create_ticket(
            self._http, endpoint, request_body=body.encode(), message_id=claim.message_id,
            **common,  # type: ignore[arg-type]
        )

    async def _prepare_helpdesk_body(self, claim: Claim, endpoint: Endpoint) -> str | None:
        """Build the helpdesk request once and keep it on the row: every retry sends the same body
        (Zendesk refuses an idempotency key reused with another body)."""
        async with self._sessions() as session, session.begin():
            ticket = await session.get(Ticket, claim.ticket_id) if claim.ticket_id is not None else None
            if ticket is None:
                return None
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == claim.call_sid))
            lines: list[tuple[str, str]] = []
            if conversation is not None:
                rows = await session.execute(
                    select(Message.role, Message.text)
                    .where(Message.conversation_id == conversation.id)
                    .order_by(Message.seq, Message.at, Message.id)
                )
                lines = [(role, text) for role, text in rows]
            details = CallbackDetails(
                ticket_id=ticket.id, call_sid=ticket.call_sid, phone_number=ticket.phone_number, reason=ticket.reason,
                requested_time=ticket.requested_time,
                summary=transcript_summary(conversation.summary if conversation else None, lines),
                dashboard_url=dashboard_url(self._options.public_url, ticket.call_sid),
            )
            request = (
                freshdesk.ticket_request(details, claim.message_id) if endpoint.kind == FRESHDESK
                else zendesk.ticket_request(details)
            )
            body = json.dumps(request, separators=(",", ":"), ensure_ascii=False)
            await session.execute(
                update(IntegrationDelivery)
                .where(IntegrationDelivery.id == claim.delivery_id, IntegrationDelivery.lease_token == claim.lease_token)
                .values(request_body=body)
            )
        return body

    async def _release(self, claim: Claim, *, delay_s: float) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(IntegrationDelivery)
                .where(IntegrationDelivery.id == claim.delivery_id, IntegrationDelivery.lease_token == claim.lease_token)
                .values(lease_until=None, lease_token=None,
                        next_attempt_at=self._clock.wall() + timedelta(seconds=delay_s))
            )

    async def _record(
        self, claim: Claim, result: AttemptResult, decision: Decision, *, refusals: int | None = None
    ) -> None:
        now = self._clock.wall()
        values: dict[str, object] = {
            "attempts": claim.attempts + 1, "refusals": claim.refusals if refusals is None else refusals,
            "last_attempt_at": now, "last_status_code": result.status_code, "lease_until": None, "lease_token": None,
            "is_ambiguous": claim.is_ambiguous or result.is_ambiguous,
        }
        if decision.outcome == "delivered":
            values.update(status=DELIVERED, delivered_at=now, finished_at=now, external_id=result.external_id,
                          external_url=result.external_url)
        elif decision.outcome == "retry":
            assert decision.next_attempt_at is not None
            values.update(next_attempt_at=decision.next_attempt_at, last_error=result.error)
        else:
            values.update(status=FAILED, finished_at=now, last_error=decision.reason or result.error)
        async with self._sessions() as session, session.begin():
            updated = await session.execute(
                update(IntegrationDelivery)
                .where(IntegrationDelivery.id == claim.delivery_id, IntegrationDelivery.lease_token == claim.lease_token)
                .values(**values)
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                log.warning("integration_delivery.lease_lost", delivery_id=claim.delivery_id)
                return
            endpoint_row = (
                update(IntegrationEndpoint)
                .where(IntegrationEndpoint.tenant == claim.tenant, IntegrationEndpoint.endpoint_key == claim.endpoint_key)
            )
            if decision.outcome == "delivered":
                await session.execute(endpoint_row.values(last_success_at=now))
            else:
                await session.execute(endpoint_row.values(last_error=result.error, last_error_at=now))
            if decision.outcome == "disable":
                await session.execute(endpoint_row.values(disabled_at=now, disabled_reason=result.error))
                await session.execute(
                    update(IntegrationDelivery)
                    .where(
                        IntegrationDelivery.tenant == claim.tenant,
                        IntegrationDelivery.endpoint_key == claim.endpoint_key,
                        IntegrationDelivery.status == PENDING,
                        IntegrationDelivery.lease_token.is_(None),
                    )
                    .values(status=FAILED, finished_at=now, last_error="the endpoint was disabled (410 Gone)")
                )
        self._observe(claim, result, decision, now)

    def _observe(self, claim: Claim, result: AttemptResult, decision: Decision, now: datetime) -> None:
        self._metrics.attempts.labels(kind=claim.kind, result="success" if result.is_success else "failure").inc()
        fields = {
            "delivery_id": claim.delivery_id, "kind": claim.kind, "tenant": claim.tenant,
            "event_type": claim.event_type, "attempt": claim.attempts + 1, "status_code": result.status_code,
        }
        if decision.outcome == "delivered":
            age_s = max(0.0, (now - claim.created_at).total_seconds())
            self._metrics.deliveries.labels(kind=claim.kind, outcome="delivered").inc()
            self._metrics.delivery_age.labels(kind=claim.kind).observe(age_s)
            log.info("integration_delivery.delivered", age_s=round(age_s, 3), **fields)
        elif decision.outcome == "retry":
            assert decision.next_attempt_at is not None
            log.info("integration_delivery.retrying", error=result.error,
                     retry_in_s=round((decision.next_attempt_at - now).total_seconds(), 1), **fields)
        else:
            outcome = "disabled" if decision.outcome == "disable" else "failed"
            self._metrics.deliveries.labels(kind=claim.kind, outcome=outcome).inc()
            log.warning("integration_delivery." + outcome, error=decision.reason or result.error, **fields)

    async def _update_gauges(self) -> None:
        now_s = self._clock.now()
        if self._last_gauge_s is not None and now_s - self._last_gauge_s < GAUGE_INTERVAL_S:
            return
        self._last_gauge_s = now_s
        async with self._sessions() as session, session.begin():
            count, oldest = (await session.execute(
                select(func.count(), func.min(IntegrationDelivery.created_at))
                .where(IntegrationDelivery.status == PENDING)
            )).one()
        self._metrics.pending.set(count)
        if oldest is not None and isinstance(oldest, datetime):
            self._metrics.oldest_pending_age.set(max(0.0, (self._clock.wall() - _aware(oldest)).total_seconds()))
        else:
            self._metrics.oldest_pending_age.set(0)


def _aware(value: datetime) -> datetime:
    # min() over a UtcDateTime column comes back raw (naive on SQLite).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

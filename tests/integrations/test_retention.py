"""Retention of integration events and deliveries (SWITCHBOARD_DELIVERY_RETENTION_DAYS), on SQLite and PostgreSQL.

What finished more than the retention ago goes (delivered and given-up webhook deliveries, the events they
came from, events that reached no endpoint); anything pending stays however old, and so do helpdesk
deliveries (the ticket's `external` list). The endpoints' figures count pruned deliveries.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import BindParameter, Connection, bindparam, func, select, text
from structlog.testing import capture_logs

from switchboard.clock import ManualClock
from switchboard.fakes.helpdesks import FakeZendesk
from switchboard.tickets.database import MIGRATIONS_DIR, create_engine, create_session_factory, run_migrations
from switchboard.tickets.integrations.metrics import DeliveryMetrics
from switchboard.tickets.integrations.models import IntegrationDelivery, IntegrationEndpoint, IntegrationEvent
from switchboard.tickets.integrations.retention import DeliveryRetention
from switchboard.tickets.integrations.stats import endpoint_stats
from switchboard.tickets.models import UtcDateTime
from tests.integrations.harness import CALLER, integration_stack, tenant_yaml
from tests.integrations.test_helpdesks import tickets_of
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
OLD = NOW - 40 * DAY
RECENT = NOW - 2 * DAY


def _event(event_id: int, status: str, occurred_at: datetime, event_type: str = "call.ended") -> IntegrationEvent:
    return IntegrationEvent(id=event_id, event_type=event_type, call_sid=f"CA{event_id}", ticket_id=None,
                            tenant="acme", body="{}", status=status, occurred_at=occurred_at,
                            next_check_at=occurred_at)


def _delivery(delivery_id: int, event_id: int, status: str, created_at: datetime, *, kind: str = "webhook",
              finished_at: datetime | None = None, lease_token: str | None = None) -> IntegrationDelivery:
    return IntegrationDelivery(
        id=delivery_id, event_id=event_id, tenant="acme", kind=kind, endpoint_key=kind, event_type="call.ended",
        message_id=f"msg_{delivery_id}", call_sid=f"CA{event_id}", ticket_id=None, status=status,
        attempts=1, refusals=0, created_at=created_at, next_attempt_at=created_at, lease_token=lease_token,
        lease_until=NOW + DAY if lease_token else None, last_error="500 boom" if status != "delivered" else None,
        delivered_at=finished_at if status == "delivered" else None, finished_at=finished_at, is_ambiguous=False,
        external_id="7" if kind != "webhook" else None,
    )


async def test_finished_rows_older_than_the_retention_go_in_batches_and_pending_or_recent_ones_stay(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
        sessions = create_session_factory(engine)
        async with sessions() as session, session.begin():
            session.add_all([
                IntegrationEndpoint(tenant="acme", endpoint_key=kind, kind=kind, label=kind)
                for kind in ("webhook", "zendesk")
            ])
            session.add_all([
                _event(1, "done", OLD),      # its only delivery was delivered long ago: goes
                _event(2, "done", OLD),      # one delivery given up long ago, others still pending: stays
                _event(3, "done", OLD, "ticket.created"),  # a helpdesk delivery keeps it
                _event(4, "done", RECENT),   # recent: stays
                _event(5, "skipped", OLD),   # reached no endpoint, long ago: goes
                _event(6, "skipped", RECENT),
                _event(7, "new", OLD),       # never fanned out (configuration not loaded): stays
                _event(8, "done", OLD),      # given up only yesterday, after long retries: stays
            ])
            await session.flush()
            session.add_all([
                _delivery(11, 1, "delivered", OLD, finished_at=OLD + timedelta(seconds=1)),
                _delivery(21, 2, "failed", OLD, finished_at=OLD + DAY),
                _delivery(22, 2, "pending", OLD),
                _delivery(23, 2, "pending", OLD, lease_token="in-flight"),
                _delivery(31, 3, "delivered", OLD, finished_at=OLD),
                _delivery(32, 3, "delivered", OLD, kind="zendesk", finished_at=OLD),
                _delivery(41, 4, "delivered", RECENT, finished_at=RECENT),
                _delivery(81, 8, "failed", OLD, finished_at=NOW - DAY),
            ])
        async with sessions() as session, session.begin():
            figures_before = await endpoint_stats(session, tenant=None)

        registry = CollectorRegistry()
        retention = DeliveryRetention(sessions=sessions, clock=ManualClock(wall_start=NOW),
                                      metrics=DeliveryMetrics(registry), retention_days=30, batch_size=2)
        with capture_logs() as logs:
            counts = await retention.prune()
            again = await retention.prune()

        async with sessions() as session, session.begin():
            figures_after = await endpoint_stats(session, tenant=None)
            deliveries = set(await session.scalars(select(IntegrationDelivery.id)))
            events = set(await session.scalars(select(IntegrationEvent.id)))
    finally:
        await engine.dispose()

    assert (counts.deliveries, counts.events) == (3, 2)
    assert (again.deliveries, again.events) == (0, 0)
    assert deliveries == {22, 23, 32, 41, 81}
    assert events == {2, 3, 4, 6, 7, 8}
    # sent 3 (two of them pruned), failed 2 (one pruned), pending 2: as before.
    assert figures_after == figures_before
    assert [(f.endpoint_key, f.sent, f.failed, f.pending, f.in_flight) for f in figures_after] == [
        ("webhook", 3, 2, 2, 1), ("zendesk", 1, 0, 0, 0)]
    runs = [record for record in logs if record["event"] == "integration_retention.pruned"]
    assert [(r["deliveries"], r["events"], r["retention_days"]) for r in runs] == [(3, 2, 30), (0, 0, 30)]
    assert runs[0]["batches"] == 2  # batches of 2 rows: a full one, then the rest
    metrics = generate_latest(registry).decode()
    assert 'switchboard_app_integration_rows_pruned_total{table="integration_deliveries"} 3.0' in metrics
    assert 'switchboard_app_integration_rows_pruned_total{table="integration_events"} 2.0' in metrics


def _webhooks(*entries: tuple[str, str]) -> str:
    return "webhooks:\n" + "".join(
        f"  - url: {url}\n    secret: ${{ACME_WEBHOOK_SECRET}}\n    events: {events}\n    allow_private_network: true\n"
        for url, events in entries
    )


async def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


async def _rows(database_url: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            deliveries = await session.scalar(select(func.count()).select_from(IntegrationDelivery))
            events = await session.scalar(select(func.count()).select_from(IntegrationEvent))
    finally:
        await engine.dispose()
    return int(deliveries or 0), int(events or 0)


def _figures(endpoints: list[dict[str, Any]], names: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    return {names.get(e["label"], e["kind"]): (e["sent"], e["failed"], e["pending"]) for e in endpoints}


async def test_the_running_app_server_prunes_by_itself_and_keeps_what_it_shows(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        WebhookReceiver(checks_time_against_wall=True) as taking,
        WebhookReceiver(answers=[400, 400, 400], checks_time_against_wall=True) as refusing,
        WebhookReceiver(default_status=503, checks_time_against_wall=True) as failing,
        FakeZendesk() as zendesk,
    ):
        integrations = _webhooks(
            (taking.url, "[call.ended]"), (refusing.url, "[call.ended]"), (failing.url, "[ticket.created]"),
        ) + (
            f"zendesk: {{subdomain: acme, email: ops@acme.example, api_token: '${{ACME_ZENDESK_TOKEN}}', "
            f"base_url: '{zendesk.base_url}', allow_private_network: true}}\n"
        )
        environ = {"ACME_WEBHOOK_SECRET": SECRET, "ACME_ZENDESK_TOKEN": "zd-test-token"}
        with capture_logs() as logs:
            async with integration_stack(
                database_url, tmp_path, tenant_yaml(integrations), environ=environ,
                # The failing endpoint is still being retried 31 days on.
                SWITCHBOARD_DELIVERY_RETRY_WINDOW_S=90 * 86400,
            ) as stack:
                for receiver in (taking, refusing, failing):
                    receiver.wall = stack.clock.wall

                def runs() -> list[dict[str, Any]]:
                    return [r for r in logs if r["event"] == "integration_retention.pruned"]

                await _wait_for(lambda: len(runs()) == 1)  # at start-up: nothing to prune
                await stack.open_call("CA800")
                await stack.create_ticket("CA800")
                await stack.end_call("CA800")
                await stack.wait_for_endpoints(lambda e: len(e) == 4 and all(x["last_error"] or x["sent"] for x in e))
                await stack.advance(10.0)
                await refusing.wait_for(2)
                await stack.advance(40.0)
                await stack.wait_for_endpoints(lambda e: sum(x["failed"] for x in e) == 1)
                before = await stack.endpoints()
                ticket_before = await tickets_of(stack, "CA800")
                rows_before = await _rows(database_url)

                await stack.advance(31 * 86400.0)  # past the retention (30 days): the hourly run prunes
                await _wait_for(lambda: len(runs()) == 2)
                await stack.wait_for_endpoints(lambda e: all(x["in_flight"] == 0 for x in e))
                after = await stack.endpoints()
                ticket_after = await tickets_of(stack, "CA800")
                rows_after = await _rows(database_url)

                await stack.open_call("CA801")  # recent: survives the next run
                await stack.end_call("CA801")
                await stack.wait_for_endpoints(lambda e: sum(x["sent"] for x in e) == 4)
                await stack.advance(3700.0)
                await _wait_for(lambda: len(runs()) == 3)
                latest = await stack.endpoints()
                rows_latest = await _rows(database_url)
                metrics = (await stack.client.get("/metrics")).text

    names = {taking.url: "taking", refusing.url: "refusing", failing.url: "failing"}
    # CA800: call.ended to two webhooks (delivered, given up), ticket.created to one failing webhook and
    # Zendesk: 4 deliveries, 2 events.
    assert rows_before == (4, 2)
    assert _figures(before, names) == {"taking": (1, 0, 0), "refusing": (0, 1, 0),
                                "failing": (0, 0, 1), "zendesk": (1, 0, 0)}
    # The delivered and the given-up webhook deliveries and their event went; the retrying one, the
    # helpdesk copy and their event stayed; what the API shows did not change.
    assert [(r["deliveries"], r["events"]) for r in runs()] == [(0, 0), (2, 1), (0, 0)]
    assert rows_after == (2, 1)
    assert _figures(after, names) == _figures(before, names)
    assert ticket_after == ticket_before
    assert ticket_after[0]["external"] == [{"system": "zendesk", "id": "1", "url": f"{zendesk.base_url}/agent/tickets/1"}]
    # CA801's deliveries (an hour old) stay.
    assert rows_latest == (4, 2)
    assert _figures(latest, names) == {"taking": (2, 0, 0), "refusing": (1, 1, 0),
                                "failing": (0, 0, 1), "zendesk": (1, 0, 0)}
    assert 'switchboard_app_integration_rows_pruned_total{table="integration_deliveries"} 2.0' in metrics
    assert 'switchboard_app_integration_rows_pruned_total{table="integration_events"} 1.0' in metrics
    assert all(SECRET not in repr(record) and CALLER not in repr(record) for record in logs)
    assert all(r.is_verified for receiver in (taking, refusing, failing) for r in receiver.received)


async def test_a_retention_of_zero_days_stops_the_app_server_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONASYNCIODEBUG"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "serve", "app",
        env={**env, "SWITCHBOARD_DELIVERY_RETENTION_DAYS": "0",
             "APP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/app.db"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await process.communicate()

    assert process.returncode == 2 and out == b""
    assert err.decode().strip().splitlines() == [
        "switchboard: setting SWITCHBOARD_DELIVERY_RETENTION_DAYS is invalid: Input should be greater than 0"]


def _at(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=UtcDateTime())


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_the_migration_fills_in_what_the_retention_reads_for_existing_rows(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, "0004_ticket_idempotency")
            for event_id in (1, 2):
                await connection.execute(text(
                    "INSERT INTO integration_events (id, event_type, call_sid, body, status, occurred_at, next_check_at)"
                    " VALUES (:id, 'call.ended', 'CA1', '{}', 'done', :at, :at)").bindparams(_at("at")),
                    {"id": event_id, "at": OLD})
            await connection.execute(text(
                "INSERT INTO integration_endpoints (tenant, endpoint_key, kind, label) VALUES ('acme', 'k', 'webhook', 'l')"))
            for delivery_id, status, delivered_at, attempted_at in (
                (1, "delivered", OLD + DAY, OLD + DAY), (2, "failed", None, OLD + 2 * DAY), (3, "pending", None, None),
            ):
                await connection.execute(text(
                    "INSERT INTO integration_deliveries (id, event_id, tenant, kind, endpoint_key, event_type, message_id,"
                    " call_sid, status, attempts, refusals, created_at, next_attempt_at, last_attempt_at, delivered_at,"
                    " is_ambiguous) VALUES (:id, 1, 'acme', 'webhook', 'k', 'call.ended', :message_id, 'CA1', :status,"
                    " 1, 0, :at, :at, :attempted_at, :delivered_at, false)"
                ).bindparams(_at("at"), _at("attempted_at"), _at("delivered_at")),
                    {"id": delivery_id, "message_id": f"msg_{delivery_id}", "status": status, "at": OLD,
                     "attempted_at": attempted_at, "delivered_at": delivered_at})
        await run_migrations(engine)
        async with create_session_factory(engine)() as session, session.begin():
            finished = {row.id: row.finished_at for row in await session.execute(
                select(IntegrationDelivery.id, IntegrationDelivery.finished_at))}
            statuses = {row.id: row.status for row in await session.execute(
                select(IntegrationEvent.id, IntegrationEvent.status))}
            endpoint = await session.scalar(select(IntegrationEndpoint))
    finally:
        await engine.dispose()

    assert finished == {1: OLD + DAY, 2: OLD + 2 * DAY, 3: None}
    assert statuses == {1: "done", 2: "skipped"}  # event 2 reached no endpoint
    assert endpoint is not None and (endpoint.pruned_delivered, endpoint.pruned_failed) == (0, 0)

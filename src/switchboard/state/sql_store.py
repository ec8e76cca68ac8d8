"""`VoiceState` on SQLAlchemy async: PostgreSQL for a deployment (`SWITCHBOARD_STATE_URL`), or an
in-process SQLite database when that is unset (one voice server keeps its own state).

Claims of one tenant serialise on that tenant's lock row (`SELECT ... FOR UPDATE`), so concurrent
webhooks on several servers never let more than `max_concurrent_calls` through; sweepers and outbox
adoption take rows with `FOR UPDATE SKIP LOCKED`, so each lost call and each orphaned record goes to
exactly one server. On SQLite (one process) a lock serialises every transaction instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from switchboard.state.models import VoiceCall, VoiceOutboxRecord, VoiceReplica, VoiceTenantLock
from switchboard.state.store import Claim, LostCall, StateTimings

MIGRATIONS_FOLDER = Path(__file__).parent / "migrations"
IN_PROCESS_URL = "sqlite+aiosqlite://"
DB_CONNECT_TIMEOUT_S = 5.0
DB_STATEMENT_TIMEOUT_S = 10.0
DB_POOL_TIMEOUT_S = 5.0
_HOLDING = ("claimed", "live")


def is_shared_state_url(state_url: str | None) -> bool:
    """Whether `create_state_engine(state_url)` makes state other processes share (PostgreSQL), not SQLite."""
    return bool(state_url) and not str(state_url).startswith("sqlite")


def create_state_engine(state_url: str | None) -> AsyncEngine:
    """PostgreSQL with connect, statement and pool timeouts; or one shared in-memory SQLite connection."""
    if not state_url:
        return create_async_engine(IN_PROCESS_URL, poolclass=StaticPool,
                                   connect_args={"timeout": DB_STATEMENT_TIMEOUT_S, "check_same_thread": False})
    if state_url.startswith("sqlite"):
        return create_async_engine(state_url, connect_args={"timeout": DB_STATEMENT_TIMEOUT_S})
    return create_async_engine(
        state_url, pool_timeout=DB_POOL_TIMEOUT_S, pool_pre_ping=True, pool_size=5, max_overflow=10,
        connect_args={"timeout": DB_CONNECT_TIMEOUT_S, "command_timeout": DB_STATEMENT_TIMEOUT_S},
    )


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate_state(engine: AsyncEngine) -> None:
    """Bring the shared-state schema to the newest revision; a no-op when it is there already.

    On PostgreSQL an advisory lock keeps replicas starting together from migrating at once."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(724011)")
        await connection.run_sync(_upgrade)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SqlVoiceState:
    """See `store.VoiceState` for the meaning of each method."""

    def __init__(self, engine: AsyncEngine, timings: StateTimings, *, owns_engine: bool = True) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._timings = timings
        self._owns_engine = owns_engine
        self._is_postgres = engine.dialect.name == "postgresql"
        # SQLite: one connection (in-process) or one writer; serialise our own transactions.
        self._lock: asyncio.Lock | None = None if self._is_postgres else asyncio.Lock()

    @classmethod
    def from_url(cls, state_url: str | None, timings: StateTimings) -> SqlVoiceState:
        return cls(create_state_engine(state_url), timings)

    @property
    def is_shared(self) -> bool:
        return self._is_postgres

    async def start(self) -> None:
        async with asyncio.timeout(DB_STATEMENT_TIMEOUT_S * 3):
            await migrate_state(self._engine)

    async def aclose(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with contextlib.AsyncExitStack() as stack:
            if self._lock is not None:
                await stack.enter_async_context(self._lock)
            session = await stack.enter_async_context(self._sessions())
            async with asyncio.timeout(DB_STATEMENT_TIMEOUT_S), session.begin():
                yield session

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self._is_postgres else sqlite.insert)(table)

    # ------------------------------------------------------------------ calls
    async def claim_call(self, *, call_sid: str, tenant: str, caller: str, replica: str,
                         max_concurrent_calls: int | None, credits: int | None, now: datetime) -> Claim:
        async with self._transaction() as session:
            await session.execute(self._insert(VoiceTenantLock).values(tenant=tenant, claims=0)
                                  .on_conflict_do_nothing(index_elements=["tenant"]))
            # Every claim of this tenant waits here until the one before it commits.
            await session.execute(select(VoiceTenantLock.tenant).where(VoiceTenantLock.tenant == tenant)
                                  .with_for_update())
            existing = await session.scalar(select(VoiceCall.holder).where(VoiceCall.call_sid == call_sid))
            if existing is not None:
                return Claim("duplicate", existing)
            holding = await session.scalar(select(func.count()).select_from(VoiceCall).where(
                VoiceCall.tenant == tenant, VoiceCall.status.in_(_HOLDING), VoiceCall.lease_expires_at > now))
            holding = int(holding or 0)
            if max_concurrent_calls is not None and holding >= max_concurrent_calls:
                return Claim("busy", replica)
            if credits is not None and holding >= credits:
                return Claim("no_credits", replica)
            session.add(VoiceCall(
                call_sid=call_sid, tenant=tenant, holder=replica, status="claimed", caller=caller, created_at=now,
                lease_expires_at=now + timedelta(seconds=self._timings.stream_url_ttl_s),
            ))
            await session.execute(update(VoiceTenantLock).where(VoiceTenantLock.tenant == tenant)
                                  .values(claims=VoiceTenantLock.claims + 1))
        return Claim("claimed", replica)

    async def attach_stream(self, *, call_sid: str, tenant: str, caller: str, replica: str, now: datetime) -> bool:
        lease_until = now + timedelta(seconds=self._timings.lease_s)
        async with self._transaction() as session:
            row = await session.scalar(select(VoiceCall).where(VoiceCall.call_sid == call_sid).with_for_update())
            if row is None:
                # Claimed nowhere (the state was reset, or the webhook was served before it existed).
                session.add(VoiceCall(
                    call_sid=call_sid, tenant=tenant, holder=replica, status="live", caller=caller, created_at=now,
                    stream_started_at=now, lease_expires_at=lease_until,
                ))
                return True
            if row.status not in ("claimed", "unused"):
                return False
            row.status = "live"
            row.holder = replica
            row.stream_started_at = now
            row.lease_expires_at = lease_until
        return True

    async def renew(self, *, replica: str, call_sids: list[str], now: datetime) -> None:
        lease_until = now + timedelta(seconds=self._timings.lease_s)
        async with self._transaction() as session:
            if call_sids:
                await session.execute(update(VoiceCall).where(
                    VoiceCall.call_sid.in_(call_sids), VoiceCall.holder == replica, VoiceCall.status == "live",
                ).values(lease_expires_at=lease_until))
            await session.execute(self._insert(VoiceReplica).values(replica=replica, heartbeat_at=now, left_at=None)
                                  .on_conflict_do_update(index_elements=["replica"],
                                                         set_={"heartbeat_at": now, "left_at": None}))

    async def release_unused(self, *, call_sid: str, replica: str, now: datetime) -> None:
        async with self._transaction() as session:
            await session.execute(update(VoiceCall).where(
                VoiceCall.call_sid == call_sid, VoiceCall.holder == replica, VoiceCall.status == "claimed",
            ).values(status="unused", lease_expires_at=now))

    async def end_call(self, *, call_sid: str, replica: str, now: datetime, end_reason: str,
                       duration_s: float) -> bool:
        async with self._transaction() as session:
            result = await session.execute(update(VoiceCall).where(
                VoiceCall.call_sid == call_sid, VoiceCall.holder == replica, VoiceCall.status == "live",
            ).values(status="ended", ended_at=now, end_reason=end_reason, duration_s=duration_s,
                     lease_expires_at=now))
            return bool(getattr(result, "rowcount", 0) == 1)

    async def sweep_lost(self, *, now: datetime) -> list[LostCall]:
        lost: list[LostCall] = []
        async with self._transaction() as session:
            rows = (await session.scalars(
                select(VoiceCall).where(VoiceCall.status.in_(_HOLDING), VoiceCall.lease_expires_at < now)
                .order_by(VoiceCall.lease_expires_at).limit(500).with_for_update(skip_locked=True)
            )).all()
            for row in rows:
                if row.status == "claimed":
                    row.status = "unused"
                    continue
                started_at = _utc(row.stream_started_at or row.created_at)
                # The server was last heard of one lease before the lease ran out.
                last_seen = _utc(row.lease_expires_at) - timedelta(seconds=self._timings.lease_s)
                duration_s = max(0.0, (last_seen - started_at).total_seconds())
                row.status = "lost"
                row.end_reason = "server_lost"
                row.ended_at = now
                row.duration_s = duration_s
                lost.append(LostCall(call_sid=row.call_sid, tenant=row.tenant, caller=row.caller, holder=row.holder,
                                     started_at=started_at, duration_s=duration_s))
        return lost

    async def leave(self, *, replica: str, now: datetime) -> None:
        async with self._transaction() as session:
            await session.execute(update(VoiceReplica).where(VoiceReplica.replica == replica)
                                  .values(left_at=now))

    async def live_call_count(self, tenant: str, *, now: datetime) -> int:
        async with self._transaction() as session:
            count = await session.scalar(select(func.count()).select_from(VoiceCall).where(
                VoiceCall.tenant == tenant, VoiceCall.status.in_(_HOLDING), VoiceCall.lease_expires_at > now))
        return int(count or 0)

    # ------------------------------------------------------------------ outbox records
    async def spool_append(self, *, owner: str, records: list[tuple[str, str]]) -> None:
        if not records:
            return
        async with self._transaction() as session:
            await session.execute(self._insert(VoiceOutboxRecord).values(
                [{"owner": owner, "item_id": item_id, "record": record} for item_id, record in records]
            ).on_conflict_do_nothing(index_elements=["item_id"]))

    async def spool_done(self, *, item_ids: list[str]) -> None:
        if not item_ids:
            return
        async with self._transaction() as session:
            await session.execute(delete(VoiceOutboxRecord).where(VoiceOutboxRecord.item_id.in_(item_ids)))

    async def spool_records(self, *, owner: str) -> list[str]:
        async with self._transaction() as session:
            rows = await session.scalars(select(VoiceOutboxRecord.record).where(VoiceOutboxRecord.owner == owner)
                                         .order_by(VoiceOutboxRecord.position))
            return list(rows.all())

    async def spool_adopt(self, *, owner: str, now: datetime) -> list[str]:
        stale_before = now - timedelta(seconds=self._timings.lease_s)
        async with self._transaction() as session:
            # A gone server's row is locked by the one server adopting it: all its records go there, in order.
            gone = (await session.scalars(select(VoiceReplica.replica).where(
                VoiceReplica.replica != owner,
                or_(VoiceReplica.left_at.is_not(None), VoiceReplica.heartbeat_at < stale_before),
            ).with_for_update(skip_locked=True))).all()
            if not gone:
                return []
            rows = (await session.execute(
                select(VoiceOutboxRecord.position, VoiceOutboxRecord.record)
                .where(VoiceOutboxRecord.owner.in_(gone)).order_by(VoiceOutboxRecord.position).limit(20_000)
            )).all()
            if not rows:
                return []
            await session.execute(update(VoiceOutboxRecord).where(
                and_(VoiceOutboxRecord.position.in_([row.position for row in rows]))).values(owner=owner))
            return [row.record for row in rows]

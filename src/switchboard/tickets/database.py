"""The App server's database: async engine with bounded waits, sessions, and migrations at start-up.

SQLite (the default) and PostgreSQL. On SQLite every transaction starts with BEGIN IMMEDIATE so
concurrent requests queue on the busy timeout instead of failing a read-to-write upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

DB_CONNECT_TIMEOUT_S = 10.0
DB_STATEMENT_TIMEOUT_S = 15.0
DB_POOL_TIMEOUT_S = 10.0
# Any number that no other Switchboard service uses as an advisory lock key.
_MIGRATION_LOCK_KEY = 0x5B_0A_99


def create_engine(database_url: str) -> AsyncEngine:
    """Build the engine; no connection is made until first use."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(
            database_url,
            pool_timeout=DB_POOL_TIMEOUT_S,
            # sqlite3's timeout is its busy timeout: how long a writer waits for the lock.
            connect_args={"timeout": DB_STATEMENT_TIMEOUT_S},
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    connect_args: dict[str, Any] = {}
    if database_url.startswith("postgresql+asyncpg"):
        connect_args = {"timeout": DB_CONNECT_TIMEOUT_S, "command_timeout": DB_STATEMENT_TIMEOUT_S}
    return create_async_engine(
        database_url, pool_timeout=DB_POOL_TIMEOUT_S, pool_pre_ping=True, connect_args=connect_args
    )


def _configure_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    # Take transaction control away from the sqlite3 module; _begin_immediate emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # In WAL mode NORMAL stays consistent after a crash; it only skips an fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _upgrade_to_head(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several App server processes may start at once; one migrates, the others wait.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def run_migrations(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; idempotent."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_to_head)


async def check_database(engine: AsyncEngine) -> None:
    """Raises: SQLAlchemyError when the database does not answer within the statement timeout."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

"""Engine, sessions and schema migrations for the AI server's database (SQLite or PostgreSQL).

Every database wait is bounded: SQLite's busy timeout, asyncpg's connect and command timeouts, and the
pool's checkout timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from switchboard.config import ensure_sqlite_folder

MIGRATIONS_FOLDER = Path(__file__).parent / "migrations"
DB_CONNECT_TIMEOUT_S = 5.0
DB_STATEMENT_TIMEOUT_S = 30.0
DB_POOL_TIMEOUT_S = 5.0


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine with timeouts set; SQLite files get WAL and foreign keys."""
    ensure_sqlite_folder(database_url)
    is_sqlite = database_url.startswith("sqlite")
    connect_args: dict[str, Any]
    if is_sqlite:
        connect_args = {"timeout": DB_STATEMENT_TIMEOUT_S}
        engine = create_async_engine(database_url, connect_args=connect_args)
    else:
        connect_args = {"timeout": DB_CONNECT_TIMEOUT_S, "command_timeout": DB_STATEMENT_TIMEOUT_S}
        engine = create_async_engine(
            database_url, connect_args=connect_args, pool_timeout=DB_POOL_TIMEOUT_S, pool_pre_ping=True
        )
    if is_sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            # WAL lets a running server read while `tenants load` writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database cannot answer a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

"""`switchboard migrate [ai|app|all]`: bring the AI and App server databases to the newest schema, then exit.

Run once per release before the services roll (the Helm chart's migrations Job), so that a dozen
replicas starting at once do not race to migrate. The services still migrate at start-up when they
find an older schema, so a single machine needs no extra step. Idempotent: a database already at the
newest revision is left untouched. Reads `AI_DATABASE_URL` and `APP_DATABASE_URL` (contract §2).
On any error one line on stderr names the database, exit 2; a database migrated before the error
stays migrated (each one is migrated in its own transaction).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from switchboard.config import AISettings, AppSettings, ensure_sqlite_folder, load_settings

TARGETS = ("ai", "app")
EXIT_FAILED = 2
MIGRATION_TIMEOUT_S = 300.0


async def _migrate_ai(database_url: str) -> None:
    from switchboard.knowledge.database import create_engine, migrate

    engine = create_engine(database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _migrate_app(database_url: str) -> None:
    from switchboard.tickets.database import create_engine, run_migrations

    ensure_sqlite_folder(database_url)
    engine = create_engine(database_url)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()


def migrate_command(targets: Sequence[str]) -> int:
    """Run `migrate`; returns the process exit code (0, or 2 naming the database that failed)."""
    chosen = TARGETS if not targets or "all" in targets else tuple(t for t in TARGETS if t in targets)
    urls = {}
    if "ai" in chosen:
        urls["ai"] = ("AI_DATABASE_URL", load_settings(AISettings).ai_database_url, _migrate_ai)
    if "app" in chosen:
        urls["app"] = ("APP_DATABASE_URL", load_settings(AppSettings).app_database_url, _migrate_app)
    for target, (variable, url, run) in urls.items():
        try:
            asyncio.run(asyncio.wait_for(run(url), MIGRATION_TIMEOUT_S))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            print(f"switchboard: migrating the {target} database ({variable}) failed: {type(exc).__name__}",
                  file=sys.stderr)
            return EXIT_FAILED
        print(f"migrated the {target} database ({variable}) to the newest schema", flush=True)
    return 0

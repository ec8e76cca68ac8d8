"""`switchboard migrate` (the chart's migrations Job): both schemas to head, idempotent, one clear line on error."""

from __future__ import annotations

import asyncio
import os
import sys

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine


async def _run(*args: str, **env: str) -> tuple[int, str, str]:
    # Without asyncio's debug mode in the child: Alembic runs its steps synchronously on the loop (the
    # command has nothing else to run), which debug mode reports on stderr as slow callbacks.
    child_env = {name: value for name, value in os.environ.items() if name != "PYTHONASYNCIODEBUG"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "migrate", *args, env={**child_env, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _tables(database_url: str) -> set[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_migrate_brings_both_databases_to_the_newest_schema_and_is_idempotent(database_url: str) -> None:
    # One database for both services, as a small deployment may do: their tables and version tables differ.
    for _ in range(2):
        code, out, err = await _run(AI_DATABASE_URL=database_url, APP_DATABASE_URL=database_url)
        assert (code, err) == (0, "")
        assert "migrated the ai database (AI_DATABASE_URL)" in out
        assert "migrated the app database (APP_DATABASE_URL)" in out
    tables = await _tables(database_url)
    assert {"ai_alembic_version", "alembic_version"} <= tables
    assert len(tables) > 4


async def test_migrate_one_database_leaves_the_other_alone(tmp_path: object) -> None:
    ai_url, app_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db", f"sqlite+aiosqlite:///{tmp_path}/app.db"
    code, out, _ = await _run("ai", AI_DATABASE_URL=ai_url, APP_DATABASE_URL=app_url)
    assert code == 0 and "app database" not in out
    assert "ai_alembic_version" in await _tables(ai_url)
    assert await _tables(app_url) == set()


async def test_an_unreachable_database_fails_with_one_line_naming_it() -> None:
    code, out, err = await _run("app", APP_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "switchboard: migrating the app database (APP_DATABASE_URL) failed: ConnectionRefusedError"]
    code, _, err = await _run("everything")
    assert code == 2 and "unknown database" in err

"""`switchboard tenants load FILE`: validate a tenant file and load it into AI_DATABASE_URL, all or nothing.

Prints progress and a summary on stdout; on error one line on stderr naming tenant and key, exit 2.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from switchboard.config import AISettings, load_settings
from switchboard.knowledge.database import create_engine, migrate
from switchboard.knowledge.embeddings import load_embedder
from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.tenant_file import parse_tenant_file
from switchboard.knowledge.tenant_loader import LoadSummary, load_tenants

EXIT_INVALID = 2


def _progress(line: str) -> None:
    print(f"  {line}", flush=True)


async def _load(database_url: str, path: Path, text: str) -> LoadSummary:
    specs = parse_tenant_file(text)
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        embedder = await asyncio.to_thread(load_embedder)
        return await load_tenants(
            engine, specs, path.parent, embedder, now=datetime.now(UTC), progress=_progress
        )
    finally:
        await engine.dispose()


def load_tenants_command(path: str) -> int:
    """Run `tenants load`; returns the process exit code (0, or 2 with nothing changed)."""
    settings = load_settings(AISettings)
    file_path = Path(path)
    try:
        if not file_path.is_file():
            raise TenantFileError(f"tenant file '{path}' not found")
        text = file_path.read_text(encoding="utf-8")
        summary = asyncio.run(_load(settings.ai_database_url, file_path.resolve(), text))
    except TenantFileError as exc:
        print(f"switchboard: {exc}; nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except UnicodeDecodeError:
        print(f"switchboard: tenant file '{path}' is not UTF-8 text; nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    except (SQLAlchemyError, OSError) as exc:
        print(f"switchboard: database error ({type(exc).__name__}); nothing was changed", file=sys.stderr)
        return EXIT_INVALID
    print(f"loaded {path}: {summary.describe()}")
    return 0

"""Dashboard render time on a seeded database (bench/dashboard_seed.py): /ui/calls with 50 rows (newest,
a deep page, filters, transcript search), as a tenant developer and as an operator, and the call page of
the 30-minute call. In-process (the real App server app through httpx's ASGI transport, one request at
a time), so the figure is the server's own time: routing, session and tenant scope, queries, template.

    .venv/bin/python bench/dashboard_render.py sqlite+aiosqlite:///./var/bench-dashboard.db [--requests 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.tickets.dashboard_data import add_user, sign_in  # noqa: E402

from switchboard.config import AppSettings, load_settings  # noqa: E402
from switchboard.tickets import create_app  # noqa: E402
from switchboard.tickets.database import create_session_factory  # noqa: E402
from switchboard.tickets.ui.models import User  # noqa: E402

CASES = (
    ("calls, newest 50", "/ui/calls"),
    ("calls, page 200", "/ui/calls?page=200"),
    ("calls, ended + has ticket", "/ui/calls?status=ended&has_ticket=yes"),
    ("calls, slower than 700 ms", "/ui/calls?slower_than_ms=700"),
    ("calls, caller digits 12", "/ui/calls?caller=12"),
    ("calls, date range 7 days", "/ui/calls?from=2026-11-20&to=2026-11-26"),
    ("calls, search 'warranty repair' (common words)", "/ui/calls?q=warranty+repair"),
    ("calls, search 'xylophone' (in no transcript)", "/ui/calls?q=xylophone"),
    ("call page, 30-minute call (720 messages)", "/ui/calls/CAbench30min"),
)


async def _measure(client: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    times_ms = []
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get(path)
        times_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times_ms


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    settings = load_settings(AppSettings, APP_DATABASE_URL=args.database_url, SWITCHBOARD_LOG_LEVEL="WARNING")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        engine = app.state.context.engine
        async with create_session_factory(engine)() as session, session.begin():
            known = set(await session.scalars(User.__table__.select().with_only_columns(User.email)))
        for email, tenant, role in (("dev@bench-a.test", "bench-a", "developer"), ("ops@bench.test", None, "operator")):
            if email not in known:
                await add_user(engine, email, tenant, role)
        transport = httpx.ASGITransport(app=app)
        print(f"| page ({engine.dialect.name}) | who | p50 ms | p95 ms | max ms |")
        print("|---|---|---:|---:|---:|")
        for who in ("dev@bench-a.test", "ops@bench.test"):
            async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
                assert (await sign_in(client, who)).status_code == 303
                for label, path in CASES:
                    if who.startswith("ops") and "30-minute" not in label and label != "calls, newest 50":
                        continue
                    await _measure(client, path, 3)  # warm caches and the statement cache
                    times_ms = sorted(await _measure(client, path, args.requests))
                    p95 = times_ms[min(len(times_ms) - 1, int(0.95 * len(times_ms)))]
                    print(f"| {label} | {'operator' if who.startswith('ops') else 'tenant developer'} | "
                          f"{statistics.median(times_ms):.1f} | {p95:.1f} | {times_ms[-1]:.1f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

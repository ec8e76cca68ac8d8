"""Seeds an App server database for the dashboard benches: 100,000 calls and 2,000,000 messages.

Bulk inserts with the drivers' fast paths (sqlite3 executemany in one transaction; asyncpg COPY), after
the schema is migrated by the App server's own migrations. Two tenants (80 % / 20 %), calls spread over
90 days, 20 messages each (a tool call every fifth), 5 % with a callback ticket, turns with latency
(some not measured); plus one 30-minute call (CAbench30min) with 720 messages and 360 turns.

    .venv/bin/python bench/dashboard_seed.py sqlite+aiosqlite:///./var/bench-dashboard.db [--calls 100000]
    .venv/bin/python bench/dashboard_seed.py postgresql+asyncpg://postgres@127.0.0.1:5432/bench_dashboard
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from switchboard.tickets.database import create_engine, run_migrations

TENANTS = ("bench-a", "bench-b")
MESSAGES_PER_CALL = 20
LONG_CALL_SID = "CAbench30min"
WORDS = ["order", "refund", "delivery", "invoice", "account", "password", "appointment", "tomorrow", "morning", "store", "hours", "price", "shipping", "address", "change", "cancel", "subscription", "payment", "card", "balance", "warranty", "repair", "manager", "callback", "please", "thanks", "hello", "where", "when", "why", "how", "could", "would", "the", "a", "my", "your", "is", "was", "will"]
END_REASONS = ("caller_hung_up",) * 6 + ("end_call",) * 2 + ("transferred", "max_duration", "model_unresponsive")
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."


def turns_for(rng: random.Random, count: int) -> list[dict[str, float | None]]:
    turns: list[dict[str, float | None]] = []
    for _ in range(count):
        model = round(rng.uniform(250, 900), 1)
        played = None if rng.random() < 0.05 else round(model + rng.uniform(80, 400), 1)
        turns.append({"speech_stopped_to_response_ms": 30.0, "speech_stopped_to_model_audio_ms": model,
                      "speech_stopped_to_media_sent_ms": model + 3, "speech_stopped_to_played_ms": played})
    return turns


def calls(total: int, seed: int = 7) -> Iterator[tuple[tuple[object, ...], list[tuple[object, ...]], bool]]:
    """(conversation row, its message rows, has a ticket); ids are 1-based in order."""
    rng = random.Random(seed)
    message_id = 0
    for call_id in range(1, total + 1):
        is_long = call_id == total
        started = NOW - timedelta(seconds=rng.uniform(0, 90 * 86400))
        messages_count = 720 if is_long else MESSAGES_PER_CALL
        duration_s = 1800.0 if is_long else rng.uniform(20, 400)
        turns = turns_for(rng, messages_count // 2 if is_long else rng.randint(3, 10))
        measured = sorted(t["speech_stopped_to_played_ms"] for t in turns if t["speech_stopped_to_played_ms"])
        median = measured[len(measured) // 2] if measured else None
        live = not is_long and rng.random() < 0.001
        call_sid = LONG_CALL_SID if is_long else f"CAbench{call_id:09d}"
        conversation = (
            call_id, call_sid, TENANTS[0] if rng.random() < 0.8 else TENANTS[1],
            f"+1******{rng.randint(0, 9999):04d}", "live" if live else "ended",
            None if live else rng.choice(END_REASONS), started,
            None if live else started + timedelta(seconds=duration_s), None if live else duration_s,
            json.dumps({"input_tokens": 1500, "output_tokens": 900}), f"trace-{call_id}",
            json.dumps([] if live else turns), None, None if live else len(turns), None if live else median,
            None if live else round(rng.uniform(0.01, 0.4), 6),
        )
        rows: list[tuple[object, ...]] = []
        for seq in range(1, messages_count + 1):
            message_id += 1
            at = started + timedelta(seconds=seq * duration_s / messages_count)
            if seq % 5 == 0:
                rows.append((message_id, call_id, f"tool:{seq}", "tool", "lookup_order", at, seq, "lookup_order",
                             json.dumps({"order_id": f"A-{rng.randint(1, 9999)}"}), '{"ok": true}',
                             round(rng.uniform(50, 900), 1), False))
            else:
                role = "user" if seq % 2 else "assistant"
                rows.append((message_id, call_id, f"{role}:{seq}", role, sentence(rng), at, seq, None, None, None,
                             None, role == "assistant" and rng.random() < 0.05))
        yield conversation, rows, rng.random() < 0.05


CONVERSATION_COLUMNS = ("id", "call_sid", "tenant", "caller_masked", "status", "end_reason", "started_at", "ended_at",
                        "duration_s", "usage", "trace_id", "turns", "summary", "turn_count", "median_turn_ms", "cost")
MESSAGE_COLUMNS = ("id", "conversation_id", "message_id", "role", "text", "at", "seq", "name", "arguments", "result",
                   "duration_ms", "interrupted")
TICKET_COLUMNS = ("call_sid", "kind", "phone_number", "reason", "requested_time", "status", "created_at")


def _sqlite_value(value: object) -> object:
    # The App server stores naive UTC on SQLite (models.UtcDateTime).
    return value.replace(tzinfo=None).isoformat(sep=" ") if isinstance(value, datetime) else value


def seed_sqlite(path: str, total: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    conversation_sql = (f"INSERT INTO conversations ({', '.join(CONVERSATION_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(CONVERSATION_COLUMNS))})")
    message_sql = (f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})")
    ticket_sql = f"INSERT INTO tickets ({', '.join(TICKET_COLUMNS)}) VALUES ({', '.join('?' * len(TICKET_COLUMNS))})"
    with connection:
        batch_c: list[tuple[object, ...]] = []
        batch_m: list[tuple[object, ...]] = []
        batch_t: list[tuple[object, ...]] = []
        for conversation, messages, has_ticket in calls(total):
            batch_c.append(tuple(_sqlite_value(v) for v in conversation))
            batch_m += [tuple(_sqlite_value(v) for v in m) for m in messages]
            if has_ticket:
                batch_t.append((conversation[1], "callback", "+14155550123", "Refund", None, "open",
                                _sqlite_value(conversation[6])))
            if len(batch_m) >= 100_000:
                connection.executemany(conversation_sql, batch_c)
                connection.executemany(message_sql, batch_m)
                connection.executemany(ticket_sql, batch_t)
                batch_c, batch_m, batch_t = [], [], []
        connection.executemany(conversation_sql, batch_c)
        connection.executemany(message_sql, batch_m)
        connection.executemany(ticket_sql, batch_t)
    connection.execute("ANALYZE")
    connection.close()


async def seed_postgres(dsn: str, total: int) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP INDEX IF EXISTS ix_messages_text_search")
        batch_c: list[tuple[object, ...]] = []
        batch_m: list[tuple[object, ...]] = []
        batch_t: list[tuple[object, ...]] = []

        async def flush() -> None:
            await connection.copy_records_to_table("conversations", records=batch_c, columns=CONVERSATION_COLUMNS)
            await connection.copy_records_to_table("messages", records=batch_m, columns=MESSAGE_COLUMNS)
            await connection.copy_records_to_table("tickets", records=batch_t, columns=TICKET_COLUMNS)

        for conversation, messages, has_ticket in calls(total):
            batch_c.append(conversation)
            batch_m += messages
            if has_ticket:
                batch_t.append((conversation[1], "callback", "+14155550123", "Refund", None, "open", conversation[6]))
            if len(batch_m) >= 100_000:
                await flush()
                batch_c, batch_m, batch_t = [], [], []
        await flush()
        for table in ("conversations", "messages", "tickets"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        await connection.execute(
            "CREATE INDEX ix_messages_text_search ON messages USING gin (to_tsvector('simple', text))")
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    started = time.perf_counter()
    engine = create_engine(args.database_url)
    try:
        await run_migrations(engine)
    finally:
        await engine.dispose()
    if args.database_url.startswith("sqlite"):
        path = args.database_url.split("///", 1)[1]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(seed_sqlite, path, args.calls)
    else:
        await seed_postgres(args.database_url.replace("postgresql+asyncpg", "postgresql"), args.calls)
    print(f"seeded {args.calls} calls, {(args.calls - 1) * MESSAGES_PER_CALL + 720} messages in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())

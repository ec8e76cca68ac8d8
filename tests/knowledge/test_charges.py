"""Charging a call's minutes (POST /voiceagent/charge_call/): once per call_sid, exact under concurrency,
never below 0, and not undone by reloading the tenant file. Each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from switchboard.knowledge.billing import billable_minutes
from switchboard.knowledge.database import create_engine
from switchboard.knowledge.models import CallCharge

from .conftest import ACME, GLOBEX, load_file, running_app, write_tenant_file

CHARGE = "/voiceagent/charge_call/"


async def charge(client: httpx.AsyncClient, call_sid: str, duration_s: float, key: str = "acme-support") -> dict[str, Any]:
    response = await client.post(CHARGE, json={"bot_profile_key": key, "call_sid": call_sid, "duration_s": duration_s})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def credits(client: httpx.AsyncClient, to: str = "+15551230001") -> dict[str, Any]:
    response = await client.post("/voiceagent/resolve_tenant/", json={"to": to})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def charge_rows(database_url: str) -> list[tuple[str, str, int]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(CallCharge.tenant_key, CallCharge.call_sid, CallCharge.minutes).order_by(CallCharge.call_sid)
            )
            return [(key, call_sid, minutes) for key, call_sid, minutes in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("duration_s", "minutes"),
    [(0, 0), (0.0004, 0), (0.3, 1), (59.9, 1), (60, 1), (60.0000001, 1), (60.001, 2), (61, 2), (3_600, 60)],
)
def test_minutes_are_the_minutes_started(duration_s: float, minutes: int) -> None:
    assert billable_minutes(duration_s) == minutes


@pytest.mark.parametrize("duration_s", [-1.0, float("nan"), float("inf")])
def test_a_duration_that_is_not_a_length_of_time_is_refused(duration_s: float) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        billable_minutes(duration_s)


async def test_a_call_is_charged_once(loaded_client: httpx.AsyncClient, database_url: str) -> None:
    with capture_logs() as logs:
        first = await charge(loaded_client, "CA0001", 125.0)
    assert first == {
        "bot_profile_key": "acme-support", "call_sid": "CA0001", "minutes": 3, "credits_remaining": 497,
        "already_charged": False,
    }
    assert {"event": "call.charged", "tenant": "acme-support", "call_sid": "CA0001", "minutes": 3,
            "credits_remaining": 497, "already_charged": False, "log_level": "info"} in logs

    # A retry of the same call, even one reporting another duration, changes nothing.
    again = await charge(loaded_client, "CA0001", 900.0)
    assert again == {**first, "already_charged": True}
    assert await credits(loaded_client) == {"bot_profile_key": "acme-support", "credits": 497, "has_credits": True}
    assert await charge_rows(database_url) == [("acme-support", "CA0001", 3)]


async def test_a_call_that_never_connected_charges_nothing(loaded_client: httpx.AsyncClient) -> None:
    assert await charge(loaded_client, "CA0002", 0.0) == {
        "bot_profile_key": "acme-support", "call_sid": "CA0002", "minutes": 0, "credits_remaining": 500,
        "already_charged": False,
    }
    assert (await charge(loaded_client, "CA0002", 0.0))["already_charged"] is True
    assert (await credits(loaded_client))["credits"] == 500


async def test_unknown_tenants_and_bad_durations_are_refused(
    loaded_client: httpx.AsyncClient, database_url: str
) -> None:
    unknown = await loaded_client.post(CHARGE, json={"bot_profile_key": "nobody", "call_sid": "CA1", "duration_s": 60})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "tenant_not_found", "detail": "no tenant with bot_profile_key 'nobody'"}
    negative = await loaded_client.post(
        CHARGE, json={"bot_profile_key": "acme-support", "call_sid": "CA1", "duration_s": -5}
    )
    assert negative.status_code == 422
    assert negative.json()["error"] == "invalid_request"
    no_sid = await loaded_client.post(CHARGE, json={"bot_profile_key": "acme-support", "call_sid": "", "duration_s": 5})
    assert no_sid.status_code == 422
    assert await charge_rows(database_url) == []
    assert (await credits(loaded_client))["credits"] == 500


async def test_the_same_call_charged_concurrently_is_charged_once(
    loaded_client: httpx.AsyncClient, database_url: str
) -> None:
    answers = await asyncio.gather(*(charge(loaded_client, "CA0003", 90.0) for _ in range(8)))

    assert sorted(a["already_charged"] for a in answers) == [False] + [True] * 7
    assert {a["minutes"] for a in answers} == {2}
    assert (await credits(loaded_client))["credits"] == 498
    assert await charge_rows(database_url) == [("acme-support", "CA0003", 2)]


async def test_calls_of_one_tenant_ending_at_the_same_moment_are_all_charged(
    loaded_client: httpx.AsyncClient, database_url: str
) -> None:
    answers = await asyncio.gather(*(charge(loaded_client, f"CA1{n:03d}", 100.0) for n in range(12)))

    assert all(not a["already_charged"] and a["minutes"] == 2 for a in answers)
    # Every charge saw the one before it: the balances it reported are 498, 496, ... 476, each once.
    assert sorted(a["credits_remaining"] for a in answers) == list(range(476, 500, 2))
    assert (await credits(loaded_client))["credits"] == 476
    assert len(await charge_rows(database_url)) == 12


async def test_credits_never_go_below_zero_and_a_spent_tenant_has_none(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME.replace("credits: 500", "credits: 3"), GLOBEX))
    async with running_app(database_url) as client:
        answers = await asyncio.gather(charge(client, "CA2001", 110.0), charge(client, "CA2002", 110.0))
        assert sorted(a["credits_remaining"] for a in answers) == [0, 1]
        assert (await charge(client, "CA2003", 30.0))["credits_remaining"] == 0
        spent_globex = await charge(client, "CA2004", 600.0, key="globex")

        route = await credits(client)
        profile = await client.post(
            "/voiceagent/call_profile/",
            json={"bot_profile_key": "acme-support", "caller_number": "+15557654321", "is_sip_call": False,
                  "call_sid": "CA2005"},
        )
    assert spent_globex["minutes"] == 10
    assert spent_globex["credits_remaining"] == 0
    assert route == {"bot_profile_key": "acme-support", "credits": 0, "has_credits": False}
    assert profile.status_code == 200
    assert (profile.json()["credits"], profile.json()["has_credits"]) == (0, False)
    # What the calls used is recorded in full, past the balance.
    assert [minutes for _, _, minutes in await charge_rows(database_url)] == [2, 2, 1, 10]


async def test_reloading_the_tenant_file_keeps_the_charges(database_url: str, tmp_path: Path) -> None:
    tenant_file = write_tenant_file(tmp_path, ACME, GLOBEX)
    await load_file(database_url, tenant_file)
    async with running_app(database_url) as client:
        await charge(client, "CA3001", 170.0)
        await charge(client, "CA3002", 20.0)
        assert (await credits(client))["credits"] == 496

        unchanged = await load_file(database_url, tenant_file)
        assert unchanged.tenants_unchanged == ["acme-support", "globex"]
        assert (await credits(client))["credits"] == 496

        await load_file(database_url, write_tenant_file(tmp_path, ACME.replace("how can I help", "what can I do"), GLOBEX))
        assert (await credits(client))["credits"] == 496

        # The file's credits are an allowance: raising it by 100 adds 100 minutes.
        await load_file(database_url, write_tenant_file(tmp_path, ACME.replace("credits: 500", "credits: 600"), GLOBEX))
        assert (await credits(client))["credits"] == 596

        await load_file(database_url, write_tenant_file(tmp_path, ACME.replace("credits: 500", "credits: 2"), GLOBEX))
        assert await credits(client) == {"bot_profile_key": "acme-support", "credits": 0, "has_credits": False}

        await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
        assert (await credits(client))["credits"] == 496


async def test_minutes_used_past_zero_come_out_of_the_next_allowance(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    async with running_app(database_url) as client:
        assert (await charge(client, "CA4001", 300.0, key="globex"))["credits_remaining"] == 0
        await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX.replace("credits: 0", "credits: 20")))
        assert (await credits(client, to="+15551230002"))["credits"] == 15
        assert (await charge(client, "CA4002", 60.0, key="globex"))["credits_remaining"] == 14


async def test_concurrent_charges_wait_for_each_other_on_postgresql(postgres_url: str, tenant_file: Path) -> None:
    """Eight connections blocked at once behind a lock on the tenant's row, then released together."""
    await load_file(postgres_url, tenant_file)
    holder_engine = create_engine(postgres_url)
    try:
        async with running_app(postgres_url) as client, holder_engine.connect() as holder:
            await holder.execute(text("SELECT credits FROM tenants WHERE key = 'acme-support' FOR UPDATE"))
            async with asyncio.TaskGroup() as tasks:
                charging = [
                    tasks.create_task(charge(client, f"CA5{n:03d}", 61.0), name=f"charge-{n}") for n in range(8)
                ]
                await wait_for_blocked_backends(holder_engine, 8)
                await holder.commit()
            answers = [task.result() for task in charging]
            balance = (await credits(client))["credits"]
    finally:
        await holder_engine.dispose()
    assert sorted(a["credits_remaining"] for a in answers) == list(range(484, 500, 2))
    assert balance == 484
    assert sum(minutes for _, _, minutes in await charge_rows(postgres_url)) == 16


async def wait_for_blocked_backends(engine: AsyncEngine, count: int) -> None:
    """Poll until `count` sessions of this database wait for a lock (within 10 s). Each look is a fresh
    transaction: pg_stat_activity is a snapshot taken once per transaction."""
    for _ in range(1_000):
        async with engine.connect() as observer:
            blocked = await observer.scalar(
                select(func.count()).select_from(text("pg_stat_activity")).where(
                    text("datname = current_database() AND wait_event_type = 'Lock'")
                )
            )
        if blocked == count:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{count} sessions never waited for the lock together (last seen: {blocked})")

"""The shared state's promises, on SQLite and on PostgreSQL: one claim per call SID, concurrency leases
that lapse, one end per call, lost calls found once, outbox records adopted once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from switchboard.state.sql_store import SqlVoiceState
from switchboard.state.store import StateTimings

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TIMINGS = StateTimings(heartbeat_s=1.0, lease_s=3.0, stream_url_ttl_s=60.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def state(database_url: str) -> AsyncIterator[SqlVoiceState]:
    store = SqlVoiceState.from_url(database_url, TIMINGS)
    await store.start()
    await store.start()  # idempotent
    try:
        yield store
    finally:
        await store.aclose()


async def claim(state: SqlVoiceState, call_sid: str, replica: str = "a", *, limit: int | None = 2,
                credits: int | None = 100, now: datetime = T0) -> str:
    result = await state.claim_call(call_sid=call_sid, tenant="acme", caller="+15550001111", replica=replica,
                                    max_concurrent_calls=limit, credits=credits, now=now)
    return result.outcome


async def test_one_claim_per_call_sid_and_the_duplicate_names_the_first_holder(state: SqlVoiceState) -> None:
    assert await claim(state, "CA1", "a") == "claimed"
    duplicate = await state.claim_call(call_sid="CA1", tenant="acme", caller="", replica="b",
                                       max_concurrent_calls=2, credits=100, now=at(1))
    assert (duplicate.outcome, duplicate.holder) == ("duplicate", "a")
    assert await state.live_call_count("acme", now=at(1)) == 1


async def test_concurrent_claims_on_many_servers_never_exceed_the_limit(state: SqlVoiceState) -> None:
    outcomes = await asyncio.gather(*(claim(state, f"CA{i}", f"r{i % 3}") for i in range(8)))
    assert sorted(outcomes) == ["busy"] * 6 + ["claimed"] * 2
    assert await state.live_call_count("acme", now=T0) == 2


async def test_each_live_call_reserves_a_credit_minute(state: SqlVoiceState) -> None:
    assert await claim(state, "CA1", credits=1, limit=None) == "claimed"
    assert await claim(state, "CA2", credits=1, limit=None) == "no_credits"


async def test_an_unused_pre_open_frees_its_claim_but_never_a_call_another_server_streams(
        state: SqlVoiceState) -> None:
    assert await claim(state, "CA1", "a") == "claimed"
    assert await claim(state, "CA2", "a") == "claimed"
    assert await state.attach_stream(call_sid="CA1", tenant="acme", caller="", replica="b", now=at(1))
    await state.renew(replica="b", call_sids=["CA1"], now=at(9))
    await state.release_unused(call_sid="CA1", replica="a", now=at(10))
    await state.release_unused(call_sid="CA2", replica="a", now=at(10))
    assert await state.live_call_count("acme", now=at(10)) == 1  # CA1, live on b
    # A second stream for a call that already has one is refused.
    assert not await state.attach_stream(call_sid="CA1", tenant="acme", caller="", replica="a", now=at(11))


async def test_a_call_ends_once_and_frees_its_lease(state: SqlVoiceState) -> None:
    await claim(state, "CA1", "a")
    assert await state.attach_stream(call_sid="CA1", tenant="acme", caller="", replica="a", now=at(1))
    assert await state.end_call(call_sid="CA1", replica="a", now=at(5), end_reason="caller_hung_up", duration_s=4)
    assert not await state.end_call(call_sid="CA1", replica="a", now=at(6), end_reason="x", duration_s=5)
    assert await state.live_call_count("acme", now=at(6)) == 0
    assert await state.sweep_lost(now=at(100)) == []


async def test_a_lapsed_lease_is_found_once_as_server_lost_with_the_duration_until_last_heard(
        state: SqlVoiceState) -> None:
    await claim(state, "CA1", "a")
    await claim(state, "CA2", "b")
    await state.attach_stream(call_sid="CA1", tenant="acme", caller="+15550001111", replica="a", now=at(1))
    await state.attach_stream(call_sid="CA2", tenant="acme", caller="", replica="b", now=at(1))
    for second in range(2, 8):
        await state.renew(replica="b", call_sids=["CA2"], now=at(second))
    await state.renew(replica="a", call_sids=["CA1"], now=at(2))  # a is killed after this
    assert await state.sweep_lost(now=at(4.5)) == []
    sweeps = await asyncio.gather(state.sweep_lost(now=at(5.5)), state.sweep_lost(now=at(5.6)))
    lost = [call for sweep in sweeps for call in sweep]
    assert [(c.call_sid, c.holder, c.caller) for c in lost] == [("CA1", "a", "+15550001111")]
    assert lost[0].duration_s == pytest.approx(1.0)
    assert await state.live_call_count("acme", now=at(7)) == 1
    # The lost call's server cannot end it a second time.
    assert not await state.end_call(call_sid="CA1", replica="a", now=at(8), end_reason="x", duration_s=7)


async def test_outbox_records_of_a_gone_server_are_adopted_once_in_order(state: SqlVoiceState) -> None:
    await state.renew(replica="a", call_sids=[], now=T0)
    await state.renew(replica="b", call_sids=[], now=T0)
    await state.renew(replica="c", call_sids=[], now=T0)
    await state.spool_append(owner="a", records=[(f"i{n}", f"r{n}") for n in range(5)])
    await state.spool_append(owner="a", records=[("i0", "again")])  # at least once: stored once
    await state.spool_done(item_ids=["i1"])
    assert await state.spool_records(owner="a") == ["r0", "r2", "r3", "r4"]
    assert await state.spool_adopt(owner="b", now=at(1)) == []  # a is still up
    await state.leave(replica="a", now=at(2))
    adopted = await asyncio.gather(state.spool_adopt(owner="b", now=at(2)), state.spool_adopt(owner="c", now=at(2)))
    assert sorted(adopted, key=len) == [[], ["r0", "r2", "r3", "r4"]]
    assert await state.spool_records(owner="a") == []

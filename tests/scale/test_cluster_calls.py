"""Several voice servers behind HAProxy round-robin (no affinity) as one (contract §7): every call greeted
with one model session wherever its webhook and stream land, one record and one charge each;
max_concurrent_calls across servers; a retried webhook; a replayed stream URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.scale.cluster import ACME_NUMBER, TINY_NUMBER, Cluster, cluster, sessions_by_call

pytestmark = [pytest.mark.multiprocess, pytest.mark.postgres]

CALLS = 20


def media_count(caller) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for m in caller.received if m.event == "media")


async def _greeted_call(deployment: Cluster, caller, number: str, from_: str) -> None:  # type: ignore[no-untyped-def]
    answer = await caller.place_call(to=number, from_=from_)
    assert answer.status_code == 200 and answer.verbs == ("Connect",), answer.twiml
    await caller.connect_stream()
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=30)


async def test_twenty_concurrent_calls_through_round_robin_each_greeted_by_one_session_one_record_one_charge(
        tmp_path: Path, postgres_url: str) -> None:
    async with cluster(tmp_path, postgres_url, SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2") as deployment:
        callers = [deployment.caller() for _ in range(CALLS)]
        async with asyncio.TaskGroup() as calls:
            for n, caller in enumerate(callers):
                calls.create_task(_greeted_call(deployment, caller, ACME_NUMBER, f"+1555700{n:04d}"))
        by_call = sessions_by_call(deployment.model)
        for caller in callers:
            # Exactly one session serves the call: it gets the caller's audio; a second one, if any, is the
            # unused pre-open of the server that answered the webhook, and it never hears the caller.
            await caller.wait_for(lambda c=caller: any(
                s.events_of("input_audio_buffer.append") for s in sessions_by_call(deployment.model)[c.call_sid]),
                timeout_s=10)
        by_call = sessions_by_call(deployment.model)
        assert set(by_call) == {c.call_sid for c in callers}
        served = {sid: [s for s in sessions if s.events_of("input_audio_buffer.append")]
                  for sid, sessions in by_call.items()}
        assert all(len(sessions) == 1 for sessions in served.values())
        assert all(len(sessions) <= 2 for sessions in by_call.values())
        for caller in callers:
            assert media_count(caller) > 0 and caller.protocol_errors == []
            await caller.hang_up()
            await caller.aclose()
        names = list(deployment.voices)
        hits = sum([await deployment.metric(n, "switchboard_preopen_sessions_total", {"outcome": "hit"}) for n in names])
        misses = sum([await deployment.metric(n, "switchboard_preopen_sessions_total", {"outcome": "miss"})
                      for n in names])
        assert hits + misses == CALLS
        assert misses >= 1  # some calls had their webhook and their stream on different servers
        assert misses == sum(1 for sessions in by_call.values() if len(sessions) == 2)
        await deployment.wait_for_credits(ACME_NUMBER, 1000 - CALLS)  # one minute each, charged once
        for caller in callers:
            record = await deployment.wait_for_ended_record(caller.call_sid)
            assert record["end_reason"] == "caller_hung_up" and record["duration_s"] > 0, record
            assert record["tenant"] == "acme-support"
            assert [m["role"] for m in record["messages"]] == ["assistant"]  # the greeting, once
            assert await deployment.charged_minutes("acme-support", caller.call_sid) == (1, True)
        # The unused pre-opens closed within the claim timeout, and never touched a record (checked above).
        async def unused() -> float:
            return sum([await deployment.metric(n, "switchboard_preopen_sessions_total", {"outcome": "unused"})
                        for n in names])

        async with asyncio.timeout(10):
            while await unused() < misses:  # noqa: ASYNC110 - polling /metrics
                await asyncio.sleep(0.2)


async def test_limits_retries_and_replays_hold_across_servers(tmp_path: Path, postgres_url: str) -> None:
    async with cluster(tmp_path, postgres_url, SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2") as deployment:
        # max_concurrent_calls: 2, across all servers: the third caller hears the busy message.
        first, second, third, fourth = (deployment.caller() for _ in range(4))
        await _greeted_call(deployment, first, TINY_NUMBER, "+15557100001")
        await _greeted_call(deployment, second, TINY_NUMBER, "+15557100002")
        busy = await third.place_call(to=TINY_NUMBER, from_="+15557100003")
        assert busy.verbs == ("Say", "Hangup") and "busy" in busy.said[0]
        assert third.call_sid not in sessions_by_call(deployment.model)
        await first.hang_up()
        await deployment.wait_for_ended_record(first.call_sid)
        await _greeted_call(deployment, fourth, TINY_NUMBER, "+15557100004")  # a line is free again
        for caller in (first, second, third, fourth):
            await caller.hang_up()
            await caller.aclose()

        # A retried webhook (Twilio posts it again; round robin sends each to another server): one session.
        async with deployment.caller() as retried:
            answers = [await retried.place_call(to=ACME_NUMBER, from_="+15557200001") for _ in range(3)]
            assert all(a.verbs == ("Connect",) for a in answers)
            assert len({a.stream_url.split("/")[-2] for a in answers if a.stream_url}) == 1  # same holder
            await asyncio.sleep(0.5)
            assert len(sessions_by_call(deployment.model)[retried.call_sid]) == 1
            await retried.connect_stream()
            await retried.wait_for(lambda: len(retried.marks_echoed) > 0, timeout_s=20)
            # ... and again while the call is live: no session is opened for it.
            stream = retried.answer
            sessions_before = len(deployment.model.sessions)
            for _ in range(2):
                again = await retried.place_call(to=ACME_NUMBER, from_="+15557200001")
                assert again.verbs == ("Connect",)
            retried.answer = stream
            await asyncio.sleep(0.5)
            assert len(deployment.model.sessions) == sessions_before
            assert not retried.is_stream_closed
            await retried.hang_up()
        record = await deployment.wait_for_ended_record(retried.call_sid)
        await deployment.wait_for_credits(ACME_NUMBER, 1000 - 1)
        assert record["end_reason"] == "caller_hung_up"
        assert [m["role"] for m in record["messages"]] == ["assistant"]
        assert await deployment.charged_minutes("acme-support", retried.call_sid) == (1, True)

        # A stream URL replayed with another call's `start`: refused wherever it lands, no session used.
        async with deployment.caller() as victim, deployment.caller() as attacker:
            await _greeted_call(deployment, victim, ACME_NUMBER, "+15557300001")
            await attacker.place_call(to=ACME_NUMBER, from_="+15557300002")
            await asyncio.sleep(0.3)
            attacker.answer = victim.answer
            await attacker.connect_stream()
            attacker.say_mulaw(b"\x10" * 1600)
            await attacker.wait_for_stream_closed(timeout_s=10)
            assert media_count(attacker) == 0
            attacker_sessions = sessions_by_call(deployment.model)[attacker.call_sid]
            assert len(attacker_sessions) == 1  # its own pre-open, never given the replayed stream
            assert attacker_sessions[0].events_of("input_audio_buffer.append") == []
            await victim.hang_up()
        refused = sum([await deployment.metric(n, "switchboard_streams_refused_total", {"reason": "call_mismatch"})
                       for n in deployment.voices])
        assert refused == 1

"""Voice servers leaving a deployment (contract §7): a rolling restart drops no call and loses no frame,
records a server accepted reach the App server after that server is gone, and a killed server's calls are
recorded `server_lost` with their concurrency released in time."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.scale.cluster import ACME_NUMBER, TINY_NUMBER, Cluster, cluster, sessions_by_call

pytestmark = [pytest.mark.multiprocess, pytest.mark.postgres]


def sent_frames(caller: Any) -> int:
    return sum(1 for m in caller.sent if isinstance(m, dict) and m.get("event") == "media")


def served_session(deployment: Cluster, call_sid: str) -> Any:
    [session] = [s for s in sessions_by_call(deployment.model).get(call_sid, [])
                 if s.events_of("input_audio_buffer.append")]
    return session


async def greeted(deployment: Cluster, number: str, from_: str) -> Any:
    caller = deployment.caller()
    answer = await caller.place_call(to=number, from_=from_)
    assert answer.verbs == ("Connect",), answer.twiml
    await caller.connect_stream()
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=30)
    await caller.wait_for(lambda: bool(sessions_by_call(deployment.model).get(caller.call_sid)) and any(
        s.events_of("input_audio_buffer.append") for s in sessions_by_call(deployment.model)[caller.call_sid]),
        timeout_s=10)
    return caller


async def serving_replica(deployment: Cluster, before: dict[str, float]) -> str:
    """Which server took the last stream: the one whose hit+miss count moved."""
    now = await stream_counts(deployment)
    [name] = [n for n in now if now[n] != before.get(n, 0.0)]
    return name


async def shift_rotation(deployment: Cluster) -> None:
    """One request through HAProxy: with two servers and two requests a call, round robin would otherwise
    send every stream to the same server."""
    await deployment.http.get(deployment.public_url + "/health-check/live", timeout=2.0)


async def stream_counts(deployment: Cluster) -> dict[str, float]:
    counts = {}
    for name, service in deployment.voices.items():
        if service.process is None or service.process.returncode is not None:
            continue
        counts[name] = (await deployment.metric(name, "switchboard_preopen_sessions_total", {"outcome": "hit"})
                        + await deployment.metric(name, "switchboard_preopen_sessions_total", {"outcome": "miss"}))
    return counts


async def test_rolling_restart_drops_no_call_and_loses_no_frame(tmp_path: Path, postgres_url: str) -> None:
    async with cluster(tmp_path, postgres_url, replicas=2, SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2") as deployment:
        live: dict[str, list[Any]] = {"voice-1": [], "voice-2": []}
        n = 0
        while min(len(calls) for calls in live.values()) < 2:
            before = await stream_counts(deployment)
            caller = await greeted(deployment, ACME_NUMBER, f"+1555740{n:04d}")
            live[await serving_replica(deployment, before)].append(caller)
            if n % 2:
                await shift_rotation(deployment)
            n += 1
        old = deployment.voices["voice-1"]
        assert old.process is not None
        old.process.send_signal(signal.SIGTERM)
        await deployment.wait_in_rotation(["voice-1"], is_up=False)
        # New calls all land on voice-2 while voice-1 drains; its calls go on, both ways.
        for k in range(3):
            caller = await greeted(deployment, ACME_NUMBER, f"+1555741{k:04d}")
            assert caller.answer is not None and "/twilio-stream/voice-2/" in str(caller.answer.stream_url)
            live["voice-2"].append(caller)
        for caller in live["voice-1"]:
            session = served_session(deployment, caller.call_sid)
            appended = len(session.events_of("input_audio_buffer.append"))
            await session.start_response()
            heard = len(caller.heard_mulaw)
            await caller.wait_for(lambda c=caller, h=heard: len(c.heard_mulaw) > h, timeout_s=10)
            await caller.wait_for(lambda s=session, a=appended: len(s.events_of("input_audio_buffer.append")) > a + 5,
                                  timeout_s=10)
        assert old.process.returncode is None  # still draining: it has live calls
        every_call = [c for calls in live.values() for c in calls]
        for caller in every_call:
            assert not caller.is_stream_closed, "a live call was dropped"
            await caller.hang_up()
        async with asyncio.timeout(20):
            assert await old.process.wait() == 0
        # Zero lost frames: every media frame each caller sent reached its model session, in order.
        for caller in every_call:
            session = served_session(deployment, caller.call_sid)
            sent = [m["media"]["payload"] for m in caller.sent if isinstance(m, dict) and m.get("event") == "media"]
            sent_count = len(sent)
            await caller.wait_for(
                lambda s=session, k=sent_count: len(s.events_of("input_audio_buffer.append")) >= k, timeout_s=10)
            assert [e["audio"] for e in session.events_of("input_audio_buffer.append")] == sent
            record = await deployment.wait_for_ended_record(caller.call_sid)
            assert record["end_reason"] == "caller_hung_up"
        # The restarted server comes back into rotation and takes calls again.
        await deployment.start_voice("voice-1")
        await deployment.wait_in_rotation(["voice-1", "voice-2"])
        before = await stream_counts(deployment)
        callers = [await greeted(deployment, ACME_NUMBER, f"+1555742{k:04d}") for k in range(2)]
        after = await stream_counts(deployment)
        assert after["voice-1"] > before.get("voice-1", 0.0) or after["voice-2"] == before["voice-2"] + 2
        for caller in (*every_call, *callers):
            await caller.hang_up()
            await caller.aclose()


async def test_records_a_server_accepted_arrive_after_it_left_during_an_app_server_outage(
        tmp_path: Path, postgres_url: str) -> None:
    async with cluster(tmp_path, postgres_url, replicas=2, SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2") as deployment:
        await deployment.stop(deployment.app)  # the App server is down
        served: dict[str, list[str]] = {"voice-1": [], "voice-2": []}
        n = 0
        while not served["voice-1"] or len(served["voice-1"]) + len(served["voice-2"]) < 4:
            before = await stream_counts(deployment)
            caller = await greeted(deployment, ACME_NUMBER, f"+1555750{n:04d}")
            served[await serving_replica(deployment, before)].append(caller.call_sid)
            await caller.hang_up()
            await caller.aclose()
            await shift_rotation(deployment)
            n += 1
        # voice-1 exits (SIGTERM) while the App server is still down: it cannot deliver its calls' records.
        assert await deployment.stop(deployment.voices["voice-1"], timeout_s=30) == 0
        await deployment.start_app()
        for call_sid in (*served["voice-1"], *served["voice-2"]):
            record = await deployment.wait_for_ended_record(call_sid, timeout_s=30)
            assert record["end_reason"] == "caller_hung_up" and record["tenant"] == "acme-support"
            assert [m["role"] for m in record["messages"]] == ["assistant"], record
        assert '"app_outbox.adopted"' in deployment.log("voice-2")


async def test_a_killed_servers_call_is_recorded_server_lost_and_its_lease_released_in_time(
        tmp_path: Path, postgres_url: str) -> None:
    ttl_s = 3.0
    async with cluster(tmp_path, postgres_url, replicas=2, SWITCHBOARD_STREAM_URL_TTL_S=str(ttl_s)) as deployment:
        first = await greeted(deployment, TINY_NUMBER, "+15557600001")
        before = await stream_counts(deployment)
        second = await greeted(deployment, TINY_NUMBER, "+15557600002")
        victim_name = await serving_replica(deployment, before)
        # The tenant's two lines are taken.
        async with deployment.caller() as third:
            assert (await third.place_call(to=TINY_NUMBER, from_="+15557600003")).verbs == ("Say", "Hangup")
        killed_at = asyncio.get_running_loop().time()
        await deployment.stop(deployment.voices[victim_name], signal.SIGKILL)
        await second.wait_for_stream_closed(timeout_s=10)
        record = await deployment.wait_for_ended_record(second.call_sid, timeout_s=ttl_s + 60)
        found_after_s = asyncio.get_running_loop().time() - killed_at
        assert record["end_reason"] == "server_lost", record
        assert found_after_s < ttl_s + 60
        # Its line is free again: a new call is answered (the other call still holds the other line).
        await deployment.wait_in_rotation([n for n in deployment.voices if n != victim_name])
        fourth = await greeted(deployment, TINY_NUMBER, "+15557600004")
        minutes, already = await deployment.charged_minutes("tiny-shop", second.call_sid)
        assert already and minutes == 1  # charged once, by the server that found it lost
        for caller in (first, second, fourth):
            await caller.hang_up()
            await caller.aclose()

"""The delivery queue across real App server processes: a kill -9 loses nothing, two servers never send
the same delivery at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from switchboard.config import AISettings, load_settings
from switchboard.knowledge.app import create_app as create_ai_app
from tests.bridge.harness import serve_on_loopback
from tests.integrations.harness import SERVICE_TOKEN, load_tenant_file, tenant_yaml, webhook_entry
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

pytestmark = pytest.mark.multiprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def ai_server(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[str]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_file(database_url, tenant_yaml(webhook_entry(receiver.url, events="[call.ended]")), tmp_path)
    app = create_ai_app(load_settings(AISettings, AI_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    async with serve_on_loopback(app) as base_url:
        yield base_url


@contextlib.asynccontextmanager
async def app_process(
    database_url: str, ai_url: str, **settings: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`switchboard serve app` as its own process; killed (SIGKILL) on the way out if still running."""
    port = _free_port()
    env = {
        **os.environ, "APP_DATABASE_URL": database_url, "AI_SERVER_URL": ai_url,
        "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "ACME_WEBHOOK_SECRET": SECRET,
        "SWITCHBOARD_INTEGRATIONS_REFRESH_S": "0.2", "SWITCHBOARD_DELIVERY_POLL_S": "0.1",
        "SWITCHBOARD_LOG_LEVEL": "WARNING", **settings,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "serve", "app", "--port", str(port), env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(30):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(base_url + "/health-check/ready")).status_code == 200:
                        break
                assert process.returncode is None, "the App server exited during start-up"
                await asyncio.sleep(0.1)
        yield process, base_url
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def end_calls(base_url: str, call_sids: list[str]) -> None:
    now = datetime.now(UTC).isoformat()
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as http:
        for call_sid in call_sids:
            opened = await http.put(f"/api/conversations/{call_sid}", json={
                "tenant": "acme-support", "caller": "+15557654321", "started_at": now})
            ended = await http.post(f"/api/conversations/{call_sid}/end", json={
                "end_reason": "caller_hung_up", "ended_at": now, "duration_s": 3.0})
            assert opened.status_code == 201 and ended.status_code == 200, (opened.text, ended.text)


async def wait_for_endpoint(base_url: str, predicate: object, timeout_s: float = 10.0) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as http:
        async with asyncio.timeout(timeout_s):
            while True:
                endpoints = (await http.get("/api/integrations/endpoints")).json()["endpoints"]
                if endpoints and predicate(endpoints[0]):  # type: ignore[operator]
                    return
                await asyncio.sleep(0.05)


async def test_an_app_server_killed_with_deliveries_pending_delivers_them_after_it_restarts(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver(default_status=503) as receiver, ai_server(tmp_path, receiver) as ai_url:
        async with app_process(database_url, ai_url) as (first, base_url):
            await end_calls(base_url, [f"CA40{i}" for i in range(5)])
            refused = await receiver.wait_for(5, timeout_s=15)
            # Every first attempt recorded (none in flight): what a crash leaves is five rows waiting.
            await wait_for_endpoint(base_url, lambda e: e["pending"] == 5 and e["in_flight"] == 0)
            first.kill()  # SIGKILL: no shutdown, no goodbye
            assert await first.wait() == -9
        receiver.default_status = 200
        async with app_process(database_url, ai_url) as (_, base_url):
            received = await receiver.wait_for(10, timeout_s=30)

    refused_ids = {r.message_id for r in refused[:5]}
    delivered = [r for r in received if r.status_code == 200]
    assert len(refused_ids) == 5 and all(r.status_code == 503 for r in refused[:5])
    # The same messages, with the same webhook-id, each delivered once by the restarted server.
    assert sorted(r.message_id for r in delivered) == sorted(refused_ids)
    assert all(r.is_verified for r in received)
    assert {r.payload["data"]["conversation"]["call_sid"] for r in delivered} == {f"CA40{i}" for i in range(5)}


async def test_a_delivery_in_flight_when_its_app_server_is_killed_is_sent_again_once_its_lease_ends(
    database_url: str, tmp_path: Path
) -> None:
    # One attempt is bounded at 2 s, so a claim's lease is 2 * 2 + 5 = 9 s.
    short = {"SWITCHBOARD_DELIVERY_TIMEOUT_S": "2", "SWITCHBOARD_DELIVERY_LEASE_S": "1"}
    async with WebhookReceiver(hold_s=30.0) as receiver, ai_server(tmp_path, receiver) as ai_url:
        async with app_process(database_url, ai_url, **short) as (first, base_url):
            await end_calls(base_url, ["CA450"])
            [in_flight] = await receiver.wait_for_arrivals(1, timeout_s=15)
            first.kill()  # while the endpoint holds the request: the attempt's outcome is never recorded
            await first.wait()
            killed_s = time.monotonic()
        receiver.hold_s = 0.0
        async with app_process(database_url, ai_url, **short) as (_, base_url):
            [retried] = await receiver.wait_for(1, timeout_s=20)  # the held request never got its answer out

    assert retried.status_code == 200 and retried.is_verified
    assert retried.message_id == in_flight
    # Not before the dead server's lease ended (9 s from its claim), nor long after.
    assert 5.0 < retried.started_s - killed_s < 12.0


@pytest.mark.postgres
async def test_two_app_servers_on_one_postgresql_never_deliver_the_same_row_at_the_same_time(
    postgres_url: str, tmp_path: Path
) -> None:
    calls = [f"CA5{i:02d}" for i in range(40)]
    async with (
        WebhookReceiver(hold_s=0.05) as receiver,
        ai_server(tmp_path, receiver) as ai_url,
        app_process(postgres_url, ai_url) as (_, first),
        app_process(postgres_url, ai_url) as (_, second),
    ):
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(end_calls(first, calls[0::2]))
            tasks.create_task(end_calls(second, calls[1::2]))
        received = await receiver.wait_for(len(calls), timeout_s=30)
        await asyncio.sleep(1.0)  # room for a duplicate to show up
        async with httpx.AsyncClient() as http:
            scrapes = [(await http.get(url + "/metrics")).text for url in (first, second)]

    by_id: dict[str, list[tuple[float, float]]] = {}
    for record in receiver.received:
        by_id.setdefault(record.message_id, []).append((record.started_s, record.finished_s))
    assert all(r.is_verified and r.status_code == 200 for r in received)
    assert len(by_id) == len(calls)
    for spans in by_id.values():
        spans.sort()
        assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert len(receiver.received) == len(calls)  # in fact, each exactly once
    sent = [
        sum(float(v) for v in re.findall(
            r'^switchboard_app_delivery_attempts_total\{kind="webhook",result="success"\} (\S+)$', text, re.M))
        for text in scrapes
    ]
    assert sum(sent) == len(calls) and all(count > 0 for count in sent), sent

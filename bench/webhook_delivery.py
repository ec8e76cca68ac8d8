"""Webhook delivery: latency from a call's end to its signed `call.ended` at the endpoint, and App server
CPU per delivery.

Starts one App server (`switchboard serve app`, its own process, on SQLite by default or the given
PostgreSQL URL) and, in this process, the AI server (tenant configuration) and a webhook endpoint that
verifies every signature with the Standard Webhooks reference library. Two tenants: `plain` has no
integrations, `hooked` has one webhook. Phase 1 ends N calls of `plain` spread evenly over D seconds,
phase 2 the same for `hooked`; each call is an open plus an end, as the voice server sends them.
Latency is from just before `POST /end` to the webhook's arrival (same machine, monotonic clock).
CPU is the App server's utime + stime from /proc over each phase (until the last webhook arrived,
plus 1 s); the difference between the phases, per call, is what a delivery costs.

    .venv/bin/python bench/webhook_delivery.py [--calls 200] [--duration-s 60] [--database URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integrations.harness import load_tenant_file  # noqa: E402
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver  # noqa: E402

from switchboard.config import AISettings, load_settings  # noqa: E402
from switchboard.fakes.loopback import LoopbackServer  # noqa: E402
from switchboard.knowledge.app import create_app as create_ai_app  # noqa: E402

SERVICE_TOKEN = "bench-service-token-0123456789"
TICKS_S = os.sysconf("SC_CLK_TCK")


def tenants_yaml(webhook_url: str) -> str:
    return f"""
tenants:
  - key: plain
    company: Plain
    numbers: ["+15551230001"]
    greeting: Hello
    credits: 100000
  - key: hooked
    company: Hooked
    numbers: ["+15551230002"]
    greeting: Hello
    credits: 100000
    integrations:
      webhooks:
        - url: {webhook_url}
          secret: ${{BENCH_WEBHOOK_SECRET}}
          events: [call.ended]
          allow_private_network: true
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_S


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def app_server(database_url: str, ai_url: str) -> AsyncIterator[tuple[int, str]]:
    port = free_port()
    env = {**os.environ, "APP_DATABASE_URL": database_url, "AI_SERVER_URL": ai_url,
           "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "BENCH_WEBHOOK_SECRET": SECRET,
           "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "serve", "app", "--port", str(port), env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(30):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(base_url + "/health-check/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield process.pid, base_url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def run_phase(base_url: str, tenant: str, calls: int, duration_s: float, phase: str,
                    receiver: WebhookReceiver | None) -> dict[str, float]:
    interval_s = duration_s / calls
    sent_at: dict[str, float] = {}
    answered_at: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as http:

        async def one_call(call_sid: str) -> None:
            now = datetime.now(UTC).isoformat()
            opened = await http.put(f"/api/conversations/{call_sid}", json={
                "tenant": tenant, "caller": "+15557654321", "started_at": now, "trace_id": f"trace-{call_sid}"})
            for seq in range(6):
                await http.post(f"/api/conversations/{call_sid}/messages", json={
                    "message_id": f"m{seq}", "role": "user" if seq % 2 else "assistant",
                    "text": "A sentence of about the length people say on a phone call, give or take.",
                    "at": now, "seq": seq})
            sent_at[call_sid] = time.monotonic()
            ended = await http.post(f"/api/conversations/{call_sid}/end", json={
                "end_reason": "caller_hung_up", "ended_at": datetime.now(UTC).isoformat(), "duration_s": 30.0,
                "usage": {"input_tokens": 100, "output_tokens": 200}})
            answered_at[call_sid] = time.monotonic()
            assert opened.status_code == 201 and ended.status_code == 200, (opened.text, ended.text)

        started = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for index in range(calls):
                await asyncio.sleep(max(0.0, started + index * interval_s - time.monotonic()))
                tasks.create_task(one_call(f"CA{phase}{index:05d}"))
    if receiver is not None:
        await receiver.wait_for(calls, timeout_s=120)
        latencies = [
            r.started_s - sent_at[r.payload["data"]["conversation"]["call_sid"]]
            for r in receiver.received if r.is_verified
        ]
        quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
        end_requests = statistics.quantiles([answered_at[c] - sent_at[c] for c in sent_at], n=100, method="inclusive")
        return {"p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000, "max_ms": max(latencies) * 1000,
                "end_p50_ms": end_requests[49] * 1000, "end_p99_ms": end_requests[98] * 1000,
                "verified": float(sum(r.is_verified for r in receiver.received))}
    return {}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--database", default=None, help="APP_DATABASE_URL (default: a throwaway SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database_url = args.database or f"sqlite+aiosqlite:///{folder}/app.db"
        async with WebhookReceiver() as receiver:
            ai_database = f"sqlite+aiosqlite:///{folder}/ai.db"
            await load_tenant_file(ai_database, tenants_yaml(receiver.url), Path(folder))
            ai_app = create_ai_app(load_settings(
                AISettings, AI_DATABASE_URL=ai_database, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
            async with LoopbackServer(ai_app, lifespan="on", name="ai") as ai, app_server(
                database_url, ai.base_url
            ) as (pid, base_url):
                await asyncio.sleep(1.0)  # the App server has loaded the integrations
                cpu_before = cpu_s(pid)
                await run_phase(base_url, "plain", args.calls, args.duration_s, "p", None)
                await asyncio.sleep(1.0)
                cpu_plain = cpu_s(pid) - cpu_before
                cpu_before = cpu_s(pid)
                latency = await run_phase(base_url, "hooked", args.calls, args.duration_s, "h", receiver)
                await asyncio.sleep(1.0)
                cpu_hooked = cpu_s(pid) - cpu_before
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    print(f"{args.calls} calls ending over {args.duration_s:g} s, App server on {backend}")
    print(f"call ended -> webhook received: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
          f"max {latency['max_ms']:.1f} ms ({latency['verified']:.0f} verified)")
    print(f"of which the POST /end itself (recording the call and its event): p50 {latency['end_p50_ms']:.1f} ms, "
          f"p99 {latency['end_p99_ms']:.1f} ms")
    print(f"App server CPU per call: {cpu_plain / args.calls * 1000:.2f} ms without integrations, "
          f"{cpu_hooked / args.calls * 1000:.2f} ms with one webhook; "
          f"per delivery: {(cpu_hooked - cpu_plain) / args.calls * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())

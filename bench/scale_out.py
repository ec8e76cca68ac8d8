"""Scale-out bench (issue 12): several voice server processes behind HAProxy round-robin, as tests/scale does.

Three parts, each on fresh processes (tests/scale/cluster.py: AI and App server processes, N voice server
processes, HAProxy, the fake Realtime model and the fake callers in this process):

- `preopen`: pre-open hit rate and greeting latency (stream `start` sent -> first agent `media` received)
  with 1, 2 and 3 voice servers, without and with the per-replica route (HAProxy `use-server` on the
  `/twilio-stream/<replica>/` segment). The fake model answers after `--model-delay-ms` (a real model's
  time to first audio); half the calls are preceded by one unrelated request through HAProxy, standing in
  for other traffic (with two servers and two requests per call, strict round robin would otherwise send
  every stream to the server that did not take the webhook).
- `state`: one voice server with SWITCHBOARD_STATE_URL unset (in-process SQLite) vs set (PostgreSQL):
  webhook latency p50/p99 and the voice process's CPU per call while N calls run (audio both ways).
- `rolling`: N live calls over 3 servers; each server in turn gets SIGTERM, its calls end one by one while
  new calls replace them elsewhere, it exits, restarts and rejoins. Counts dropped calls (a stream the
  server closed before the caller hung up), incomplete records, and lost caller frames.

    .venv/bin/python bench/scale_out.py [--parts preopen,state,rolling] [--calls 12] [--state-calls 50,200]

Needs PostgreSQL at 127.0.0.1:5432 (as the tests). The machine is shared: figures are noisy; runs are short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio  # noqa: E402
from tests.bridge.harness import API_KEY  # noqa: E402
from tests.scale.cluster import ACME_NUMBER, Cluster, cluster  # noqa: E402

PG_ADMIN_DSN = os.environ.get("SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    name = f"sbbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def preopen_counts(deployment: Cluster) -> tuple[float, float]:
    hits = misses = 0.0
    for name in deployment.voices:
        hits += await deployment.metric(name, "switchboard_preopen_sessions_total", {"outcome": "hit"})
        misses += await deployment.metric(name, "switchboard_preopen_sessions_total", {"outcome": "miss"})
    return hits, misses


async def greeted_call(deployment: Cluster, index: int, rng: random.Random, *, hold_s: float,
                       stream_gap_s: float = 0.0) -> float:
    """One call; returns the greeting latency (ms): `start` sent -> first agent media received."""
    if rng.random() < 0.5:
        await deployment.http.get(deployment.public_url + "/health-check/live", timeout=2.0)
    caller = deployment.caller()
    try:
        answer = await caller.place_call(to=ACME_NUMBER, from_=f"+1555800{index:04d}")
        assert answer.verbs == ("Connect",), answer.twiml
        await asyncio.sleep(stream_gap_s)  # Twilio's time from the TwiML to the stream (an assumption)
        await caller.connect_stream()
        started = asyncio.get_running_loop().time()
        await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=30)
        first = next(m.at_s for m in caller.received if m.event == "media")
        await asyncio.sleep(hold_s)
        return (first - started) * 1000
    finally:
        await caller.hang_up()
        await caller.aclose()


async def part_preopen(args: argparse.Namespace, workdir: Path) -> list[str]:
    rows = ["| voice servers | per-replica route | calls | pre-open hits | hit rate | greeting p50 ms | p90 ms | max ms |",
            "|---|---|---|---|---|---|---|---|"]
    configs = [(int(r), route == "route") for r, route in (c.split(":") for c in args.configs.split(","))]
    for replicas, route in configs:
        rng = random.Random(replicas * 10 + route)
        model = FakeRealtimeServer(api_key=API_KEY,
                                   default_script=stream_audio(ms=800, delay_s=args.model_delay_ms / 1000))
        async with throwaway_database() as state_url, cluster(
                workdir / f"preopen-{replicas}-{route}", state_url, replicas=replicas, per_replica_route=route,
                model=model, SWITCHBOARD_LOG_LEVEL="WARNING") as deployment:
            latencies: list[float] = []
            for wave in range(0, args.calls, 4):
                async with asyncio.TaskGroup() as calls:
                    tasks = [calls.create_task(greeted_call(deployment, wave + k, rng, hold_s=0.5,
                                                            stream_gap_s=args.stream_gap_ms / 1000))
                             for k in range(min(4, args.calls - wave))]
                latencies.extend(t.result() for t in tasks)
            hits, misses = await preopen_counts(deployment)
        rate = hits / (hits + misses) if hits + misses else 0.0
        rows.append(f"| {replicas} | {'yes' if route else 'no'} | {args.calls} | {hits:g} | {rate:.0%} | "
                    f"{pct(latencies, 0.5)} | {pct(latencies, 0.9)} | {round(max(latencies), 1)} |")
        print(rows[-1], flush=True)
    return rows


async def part_state(args: argparse.Namespace, workdir: Path) -> list[str]:
    rows = ["| SWITCHBOARD_STATE_URL | calls | webhook p50 ms | webhook p99 ms | voice CPU ms per call·s | greeted |",
            "|---|---|---|---|---|---|"]
    for calls in args.state_calls:
        for shared in (False, True):
            async with contextlib.AsyncExitStack() as stack:
                state_url = await stack.enter_async_context(throwaway_database()) if shared else ""
                deployment = await stack.enter_async_context(cluster(
                    workdir / f"state-{calls}-{shared}", state_url, replicas=1, SWITCHBOARD_LOG_LEVEL="WARNING",
                    SWITCHBOARD_MAX_CALLS="1000"))
                [voice] = deployment.voices.values()
                assert voice.process is not None
                callers = [deployment.caller() for _ in range(calls)]
                gate = asyncio.Semaphore(10)

                async def start(index: int, caller: Any) -> None:
                    async with gate:
                        answer = await caller.place_call(to=ACME_NUMBER, from_=f"+1555810{index:04d}")
                        assert answer.verbs == ("Connect",), answer.twiml
                        await caller.connect_stream()
                    await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=60)

                async with asyncio.TaskGroup() as group:
                    for index, caller in enumerate(callers):
                        group.create_task(start(index, caller))
                # Voice CPU while the N calls run (audio both ways), then the webhook latency of new calls
                # arriving one after another while they run (their sessions are pre-opened and left unused).
                cpu0, t0 = cpu_s(voice.process.pid), time.perf_counter()
                await asyncio.sleep(args.hold_s)
                cpu1, t1 = cpu_s(voice.process.pid), time.perf_counter()
                webhook_ms: list[float] = []
                for probe in range(args.webhooks):
                    async with deployment.caller() as newcomer:
                        w0 = time.perf_counter()
                        answer = await newcomer.place_call(to=ACME_NUMBER, from_=f"+1555811{probe:04d}")
                        webhook_ms.append((time.perf_counter() - w0) * 1000)
                        assert answer.verbs == ("Connect",), answer.twiml
                greeted = sum(1 for c in callers if any(m.event == "media" for m in c.received))
                for caller in callers:
                    await caller.hang_up()
                    await caller.aclose()
            per_call = (cpu1 - cpu0) * 1000 / (calls * (t1 - t0))
            rows.append(f"| {'PostgreSQL' if shared else 'unset'} | {calls} | {pct(webhook_ms, 0.5)} | "
                        f"{pct(webhook_ms, 0.99)} | {per_call:.2f} | {greeted}/{calls} |")
            print(rows[-1], flush=True)
    return rows


async def part_rolling(args: argparse.Namespace, workdir: Path) -> list[str]:
    rng = random.Random(7)
    async with throwaway_database() as state_url, cluster(
            workdir / "rolling", state_url, replicas=3, SWITCHBOARD_LOG_LEVEL="WARNING",
            SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2") as deployment:
        index = 0
        live: list[Any] = []
        finished: list[Any] = []
        dropped = 0

        async def hang_up(caller: Any) -> None:
            nonlocal dropped
            if caller.is_stream_closed:  # the server closed it first: a dropped call
                dropped += 1
            await caller.hang_up()
            finished.append(caller)

        async def add_call() -> None:
            nonlocal index
            if rng.random() < 0.5:
                await deployment.http.get(deployment.public_url + "/health-check/live", timeout=2.0)
            caller = deployment.caller()
            answer = await caller.place_call(to=ACME_NUMBER, from_=f"+1555820{index:04d}")
            index += 1
            assert answer.verbs == ("Connect",), answer.twiml
            await caller.connect_stream()
            await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=30)
            live.append(caller)

        for _ in range(args.calls):
            await add_call()
        started = time.perf_counter()
        for name, service in deployment.voices.items():
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            await deployment.wait_in_rotation([name], is_up=False)
            # Its calls end one by one (callers hang up); each is replaced by a call on another server.
            while service.process.returncode is None:
                if live:
                    await hang_up(live.pop(0))
                    await add_call()
                await asyncio.sleep(0.2)
            assert service.process.returncode == 0, f"{name} exited {service.process.returncode}"
            await deployment.start_voice(name)
            await deployment.wait_in_rotation([name])
        roll_s = time.perf_counter() - started
        for caller in live:
            await hang_up(caller)
        incomplete = 0
        for caller in finished:
            record = await deployment.wait_for_ended_record(caller.call_sid, timeout_s=30)
            if record["end_reason"] != "caller_hung_up" or not record["messages"]:
                incomplete += 1
        for caller in finished:
            await caller.aclose()
    return ["| voice servers | calls placed | roll duration s | dropped calls | incomplete records |",
            "|---|---|---|---|---|",
            f"| 3 | {len(finished)} | {roll_s:.1f} | {dropped} | {incomplete} |"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="preopen,state,rolling")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--state-calls", default="50,200")
    parser.add_argument("--hold-s", type=float, default=5.0)
    parser.add_argument("--webhooks", type=int, default=40, help="timed webhooks per state run")
    parser.add_argument("--model-delay-ms", type=float, default=400.0)
    parser.add_argument("--stream-gap-ms", type=float, default=0.0,
                        help="wait between the webhook's answer and the stream, as Twilio takes (not measured here)")
    parser.add_argument("--configs", default="1:none,2:none,2:route,3:none,3:route",
                        help="voice servers:route|none, comma-separated")
    args = parser.parse_args()
    args.state_calls = [int(n) for n in args.state_calls.split(",")]
    with tempfile.TemporaryDirectory(prefix="sb-scale-") as folder:
        workdir = Path(folder)
        for part in args.parts.split(","):
            (workdir / part).mkdir()
            print(f"## {part} ({time.strftime('%H:%M UTC', time.gmtime())})", flush=True)
            rows = await {"preopen": part_preopen, "state": part_state, "rolling": part_rolling}[part](
                args, workdir / part)
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

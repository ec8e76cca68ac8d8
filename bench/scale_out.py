"""Scale-out bench (issue 12): several voice server processes behind HAProxy round-robin, as tests/scale does.

Three parts, each on fresh processes (tests/scale/cluster.py: AI and App server processes, N voice server
processes, HAProxy, the fake Realtime model and the fake callers in this process):

- `preopen`: pre-open hit rate and greeting latency (stream `start` sent -> first agent `media` received)
  with 1, 2 and 3 voice servers, without and with the per-replica route (HAProxy `use-server` on the
  `/twilio-stream/<replica>/` segment). The fake model answers after `--model-delay-ms` (a real model's
  time to first audio); half the calls are preceded by one unrelated request through HAProxy, standing in
  for other traffic (with two servers and two requests per call, strict round robin would otherwise send
  every stream to the server that did not take the webhook).
- `state`: one voice server with SWITCHBOARD_STATE_URL unset (in-process SQLite) vs set (PostgreSQL), at N
  live calls (audio both ways, turns and barge-ins) while calls end and new ones arrive through the webhook
  (`--churn-per-s`): webhook latency p50/p99 of every call arriving in the window, the voice process's CPU
  per call-second, and frame latency both ways.
- `rolling`: N live calls over 3 servers; each server in turn gets SIGTERM, its calls end as their callers
  hang up while new calls replace them elsewhere, it exits, restarts and rejoins. Counts dropped calls (a
  stream the server closed before the caller hung up), incomplete records and lost frames, and gives the
  frame latency (caller -> model and model -> caller, through HAProxy and the voice server) during the roll.

`state` and `rolling` drive the calls with bench/loadgen.py (bench/scale_load.py): cheap enough for 200 calls
in this process, every frame stamped on one clock. `preopen` uses the tests' TwilioCaller and fake model.

    .venv/bin/python bench/scale_out.py [--parts preopen,state,rolling] [--calls 12] [--state-calls 50,200]
        [--rolling-calls 60] [--window-s 30] [--churn-per-s 2]

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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from loadgen import LoadGenerator, LoopLag, Scenario, now_ns  # noqa: E402
from scale_load import CallLoad, LoadgenModel  # noqa: E402
from tests.bridge.harness import API_KEY  # noqa: E402
from tests.scale.cluster import ACME_NUMBER, Cluster, cluster  # noqa: E402

from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio  # noqa: E402

PG_ADMIN_DSN = os.environ.get("SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETUP_WINDOW_MS = 2000


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


def frame_columns(gen: LoadGenerator) -> str:
    """Frame latency p50/p99 both ways (not counting a call's first SETUP_WINDOW_MS, where caller audio waits for
    the model session: set-up, measured as greeting latency by `preopen`), frames received and lost (sent in
    the window, never received, not counting unused pre-opened sessions' audio), loadgen lag p99."""
    samples = gen.samples
    up, down = samples.by_kind.get("up", []), samples.by_kind.get("down", [])
    received = sum(len(samples.by_kind.get(kind, [])) for kind in ("up", "up_setup", "down", "down_setup"))
    # A pre-opened session whose stream went to another replica has no caller: its greeting was never meant
    # to reach anyone (the caller's own session greeted them); it is not a lost frame.
    lost = sum(n for kind, n in lost_breakdown(gen).items() if kind != "down_no_call")
    return (f"{pct_ns(up, 0.5)} / {pct_ns(up, 0.99)} | {pct_ns(down, 0.5)} / {pct_ns(down, 0.99)} | "
            f"{received} | {lost} | {pct_ns(samples.by_kind.get('loadgen_lag', []), 0.99)}")


def lost_breakdown(gen: LoadGenerator) -> dict[str, int]:
    """Frames sent in the window and never received, by direction and by when in the call they were sent."""
    samples, found = gen.samples, {}
    setup_ns = SETUP_WINDOW_MS * 1_000_000
    for caller, sent_ns in gen.caller_payloads.values():
        if samples.in_window(sent_ns):
            key = "up_setup" if sent_ns < caller.start_sent_ns + setup_ns else "up"
            found[key] = found.get(key, 0) + 1
    for session, sent_ns in gen.model_payloads.values():
        if samples.in_window(sent_ns):
            call = session.call
            key = "down_no_call" if call is None else (
                "down_setup" if sent_ns < call.start_sent_ns + setup_ns else "down")
            found[key] = found.get(key, 0) + 1
    return found


def pct_ns(values: list[int], q: float) -> float | None:
    return pct([v / 1e6 for v in values], q)


async def part_state(args: argparse.Namespace, workdir: Path) -> list[str]:
    rows = ["| SWITCHBOARD_STATE_URL | live calls | webhooks timed | webhook p50 ms | webhook p99 ms | "
            "voice CPU ms per call·s | frame up p50 / p99 ms | frame down p50 / p99 ms | frames | lost | "
            "loadgen lag p99 ms | dropped | setup failures |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    run_tag = 0x5700
    for calls in args.state_calls:
        for shared in (False, True):
            run_tag += 1
            gen = LoadGenerator(Scenario(setup_window_ms=SETUP_WINDOW_MS))
            async with contextlib.AsyncExitStack() as stack:
                state_url = await stack.enter_async_context(throwaway_database()) if shared else ""
                deployment = await stack.enter_async_context(cluster(
                    workdir / f"state-{calls}-{shared}", state_url, replicas=1, model=LoadgenModel(gen),
                    SWITCHBOARD_LOG_LEVEL="WARNING", SWITCHBOARD_MAX_CALLS="100000"))
                [voice] = deployment.voices.values()
                assert voice.process is not None
                http = await stack.enter_async_context(httpx.AsyncClient(
                    timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)))
                load = CallLoad(deployment, gen, http, run_tag)
                lag = LoopLag(gen.samples)
                stack.callback(lag.stop)
                await load.ramp(calls, args.ramp_per_s)
                await asyncio.sleep(2.0)  # settle: every greeting under way
                # The window: N live calls with audio both ways and turns, while calls end and new ones
                # arrive through the webhook at --churn-per-s (every webhook inside it is timed).
                gen.samples.window_start_ns = now_ns()
                cpu0, t0 = cpu_s(voice.process.pid), time.perf_counter()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + args.window_s
                async with asyncio.TaskGroup() as churn:
                    while loop.time() < deadline:
                        churn.create_task(load.replace_oldest())
                        await asyncio.sleep(1 / args.churn_per_s)
                cpu1, t1 = cpu_s(voice.process.pid), time.perf_counter()
                gen.samples.window_end_ns = now_ns()
                await asyncio.sleep(0.5)  # stragglers sent inside the window
                webhook_ms = load.webhooks_between(t0, t1)
                print(f"frames never received, by kind: {lost_breakdown(gen)}", file=sys.stderr, flush=True)
                await load.hang_up_all()
                dropped = gen.samples.counts.get("calls_dropped_by_server", 0)
            per_call = (cpu1 - cpu0) * 1000 / (calls * (t1 - t0))
            rows.append(f"| {'PostgreSQL' if shared else 'unset'} | {calls} | {len(webhook_ms)} | "
                        f"{pct(webhook_ms, 0.5)} | {pct(webhook_ms, 0.99)} | {per_call:.2f} | {frame_columns(gen)} | "
                        f"{dropped} | {sum(load.failures.values())} {load.failures or ''} |")
            print(rows[-1], flush=True)
    return rows


async def part_rolling(args: argparse.Namespace, workdir: Path) -> list[str]:
    gen = LoadGenerator(Scenario(setup_window_ms=SETUP_WINDOW_MS))
    async with throwaway_database() as state_url, cluster(
            workdir / "rolling", state_url, replicas=3, model=LoadgenModel(gen), per_replica_route=args.route,
            SWITCHBOARD_LOG_LEVEL="WARNING",
            SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="2", SWITCHBOARD_MAX_CALLS="100000") as deployment, \
            httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)) as http:
        load = CallLoad(deployment, gen, http, run_tag=0x7011)
        lag = LoopLag(gen.samples)
        try:
            await load.ramp(args.rolling_calls, args.ramp_per_s)
            await asyncio.sleep(2.0)
            spread = await live_calls_by_server(deployment)
            # Frame latency and losses count from here to the last server back in rotation.
            gen.samples.window_start_ns = now_ns()
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            for name, service in deployment.voices.items():
                assert service.process is not None
                service.process.send_signal(signal.SIGTERM)
                await deployment.wait_in_rotation([name], is_up=False)
                # Its calls end as their callers hang up (the oldest call first, anywhere); each is replaced
                # by a new call, which the load balancer sends to the servers still ready.
                async with asyncio.TaskGroup() as churn:
                    while service.process.returncode is None:
                        churn.create_task(load.replace_oldest())
                        await asyncio.sleep(1 / args.churn_per_s)
                assert service.process.returncode == 0, f"{name} exited {service.process.returncode}"
                await deployment.start_voice(name)
                await deployment.wait_in_rotation([name])
                # New calls reach the restarted server before the next one drains.
                deadline = loop.time() + args.settle_s
                async with asyncio.TaskGroup() as churn:
                    while loop.time() < deadline:
                        churn.create_task(load.replace_oldest())
                        await asyncio.sleep(1 / args.churn_per_s)
            roll_s = time.perf_counter() - started
            gen.samples.window_end_ns = now_ns()
            await asyncio.sleep(0.5)
            await load.hang_up_all()
        finally:
            lag.stop()
        print(f"frames never received, by kind: {lost_breakdown(gen)}", file=sys.stderr, flush=True)
        unused = sum(1 for session in gen.sessions if session.call is None)
        incomplete, missing_messages, owed = await load.incomplete_records()
        dropped = gen.samples.counts.get("calls_dropped_by_server", 0)
    return ["| voice servers | per-replica route | live calls | live calls per server before | calls placed | roll s | dropped calls | "
            "setup failures | incomplete records | messages lost (of owed) | frame up p50 / p99 ms | frame down p50 / p99 ms | frames | "
            "lost frames | loadgen lag p99 ms | model sessions (unused pre-opens) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| 3 | {'yes' if args.route else 'no'} | {args.rolling_calls} | {spread} | {load.placed} | {roll_s:.1f} | {dropped} | "
            f"{sum(load.failures.values())} {load.failures or ''} | {incomplete} | {missing_messages} ({owed}) | {frame_columns(gen)} | "
            f"{len(gen.sessions)} ({unused}) |"]


async def live_calls_by_server(deployment: Cluster) -> str:
    counts = [await deployment.metric(name, "switchboard_live_calls") for name in deployment.voices]
    return "/".join(f"{c:g}" for c in counts)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="preopen,state,rolling")
    parser.add_argument("--calls", type=int, default=12, help="calls per pre-open configuration")
    parser.add_argument("--rolling-calls", type=int, default=60, help="live calls during the rolling restart")
    parser.add_argument("--state-calls", default="50,200")
    parser.add_argument("--window-s", type=float, default=30.0, help="measurement window of each state run")
    parser.add_argument("--churn-per-s", type=float, default=2.0,
                        help="calls ending and new calls arriving per second while measuring (state, rolling)")
    parser.add_argument("--ramp-per-s", type=float, default=10.0, help="call arrival rate while ramping up")
    parser.add_argument("--route", action=argparse.BooleanOptionalAction, default=True,
                        help="rolling: HAProxy routes /twilio-stream/<replica>/ to that replica (deploy/edge)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="rolling: calls after a restart, before the next")
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
    uvloop.run(main())  # as bench/bridge_latency.py: the load generator's own loop costs less

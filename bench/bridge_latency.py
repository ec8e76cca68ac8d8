"""Bridge latency bench: the voice server vs a bare relay, both pinned to one core, same load.

Starts the AI server (tenants loaded from a bench YAML) and, per run, a fresh voice server
(`switchboard serve voice`, `taskset -c 1`) or the bare relay (bench/bare_relay.py, same core).
This process is the load generator (`taskset -c 0`): N fake Twilio callers and a fake Realtime
server, so both timestamps of every sample come from one clock. Prints a table and writes
docs/benchmarks.md.

With `--observability off,on` every voice run is done once per mode (alternating, so drift hits both):
"on" points the voice server at a fake Opik backend and an OTLP/HTTP sink (bench/sinks.py, one small
process on the load generator's core, not inside it) and the report compares CPU per call and p99.

    .venv/bin/python bench/bridge_latency.py [--calls 1,50,200] [--seconds 20] [--relay/--no-relay]
        [--observability off,on] [--dashboards 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from twilio.request_validator import RequestValidator

from switchboard.bridge.stream_urls import issue_stream_url
from switchboard.url_tokens import derive_url_token_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import (  # noqa: E402
    FakeCaller,
    LoadGenerator,
    LoopLag,
    Scenario,
    connect_caller,
    now_ns,
    process_cpu_s,
)

REPO = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "b" * 32
SERVICE_TOKEN = "bench-service-token-0123456789"
TENANT_NUMBER = "+15551230001"
TENANT_YAML = """
tenants:
  - key: bench-support
    company: Bench Outdoor
    numbers: ["+15551230001"]
    greeting: "Thanks for calling Bench Outdoor, how can I help?"
    instructions: "You help callers with orders, returns and store hours."
    voice: {provider: openai, name: marin, speed: 1.0}
    transcriber: none
    business_hours: {timezone: America/New_York, mon-fri: "09:00-18:00", sat: "10:00-14:00"}
    credits: 100000000  # every run of every call count is charged to this one tenant
"""
LOAD_CORE = 0
SERVER_CORE = 1
NICE = -20
P99_TARGET_MS = 20.0
OBS_MODES = ("off", "on")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def core_busy_s() -> dict[int, float]:
    """CPU seconds each core has been busy (all processes), from /proc/stat."""
    busy: dict[int, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values[:8]]
            busy[int(name[3:])] = (sum(v) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait
    return busy


async def wait_for_quiet_machine(own_pids: list[int], timeout_s: float = 10.0, limit_pct: float = 20.0) -> float:
    """Wait (bounded) until other processes use < limit_pct of one core in all; returns the last reading."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    foreign = 100.0
    while loop.time() < deadline:
        before, own_before = core_busy_s(), sum(cpu_seconds(p) for p in own_pids) + process_cpu_s()
        await asyncio.sleep(1.0)
        after, own_after = core_busy_s(), sum(cpu_seconds(p) for p in own_pids) + process_cpu_s()
        foreign = 100 * (sum(after.values()) - sum(before.values()) - (own_after - own_before))
        if foreign < limit_pct:
            break
    return max(0.0, foreign)


def base_env(**extra: str) -> dict[str, str]:
    # OPIK_* / OTEL_* from the caller's shell would turn tracing on behind the bench's back: only --observability does.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "TWILIO_", "SWITCHBOARD_", "AI_", "OPIK_", "OTEL_"))}
    env.update(SWITCHBOARD_LOG_LEVEL="WARNING", SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN, **extra)
    return env


async def wait_for_http(url: str, timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url, timeout=1.0)).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Sinks:
    """bench/sinks.py as a subprocess next to the AI server: a fake Opik backend and an OTLP/HTTP sink that
    answer at once and count what they get (GET /stats)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.opik_url = self.otlp_url = self.stats_url = ""

    def start(self) -> None:
        """Start it and read its URLs (blocks up to 15 s: called before any call is placed)."""
        self.process = subprocess.Popen(
            ["nice", "-n", str(NICE), "taskset", "-c", str(LOAD_CORE), sys.executable, str(REPO / "bench/sinks.py")],
            env=base_env(), stdout=subprocess.PIPE, stderr=open(self.workdir / "sinks.log", "wb"),  # noqa: SIM115
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 15.0)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            stop_process(self.process)
            raise RuntimeError(f"bench/sinks.py did not start: {(self.workdir / 'sinks.log').read_text()[-500:]}")
        urls = json.loads(line)
        self.opik_url, self.otlp_url, self.stats_url = urls["opik_url"], urls["otlp_url"], urls["stats_url"]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            answer = await http.get(self.stats_url, timeout=5.0)
            answer.raise_for_status()
            return dict(answer.json())

    def otel_env(self, service_name: str) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service_name, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "1000",
        }

    def voice_env(self) -> dict[str, str]:
        return {"OPIK_URL_OVERRIDE": self.opik_url, "OPIK_PROJECT_NAME": "bench",
                **self.otel_env("switchboard-voice")}

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            if self.process.stdout is not None:
                self.process.stdout.close()


def sink_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the sinks received between two /stats readings (counters and per-key counter dicts)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        if isinstance(value, dict):
            old = before.get(key, {})
            diff = {k: v - old.get(k, 0) for k, v in value.items() if v - old.get(k, 0)}
            if diff:
                out[key] = diff
        else:
            out[key] = value - before.get(key, 0)
    return out


class Stack:
    """The AI server (for the voice server) and the fake model's port, shared by every run."""

    def __init__(self, workdir: Path, model_port: int, ai_extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.ai_extra_env = ai_extra_env or {}
        self.model_url = f"ws://127.0.0.1:{model_port}/v1/realtime"
        self.ai_port = free_port()
        self.ai_process: subprocess.Popen[bytes] | None = None
        self.db_url = f"sqlite+aiosqlite:///{workdir}/ai.db"
        self.app_port = free_port()
        self.app_process: subprocess.Popen[bytes] | None = None
        self.dashboards_process: subprocess.Popen[bytes] | None = None

    async def start_ai(self) -> None:
        tenant_file = self.workdir / "bench-tenants.yaml"
        tenant_file.write_text(TENANT_YAML)
        env = base_env(AI_DATABASE_URL=self.db_url)
        subprocess.run([str(REPO / ".venv/bin/switchboard"), "tenants", "load", str(tenant_file)],
                       env=env, check=True, stdout=subprocess.DEVNULL, timeout=300)
        env.update(self.ai_extra_env)
        self.ai_process = subprocess.Popen(
            ["nice", "-n", str(NICE), "taskset", "-c", str(LOAD_CORE), str(REPO / ".venv/bin/switchboard"), "serve", "ai",
             "--host", "127.0.0.1", "--port", str(self.ai_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "ai.log", "wb"),  # noqa: SIM115
        )
        await wait_for_http(f"http://127.0.0.1:{self.ai_port}/health-check/ready")

    async def start_app(self) -> None:
        """The App server the voice server records conversations to (without it the outbox would retry and
        overflow, which is not the steady state being measured)."""
        env = base_env(APP_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir}/app.db")
        self.app_process = subprocess.Popen(
            ["nice", "-n", str(NICE), "taskset", "-c", str(LOAD_CORE), str(REPO / ".venv/bin/switchboard"), "serve",
             "app", "--host", "127.0.0.1", "--port", str(self.app_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "app.log", "wb"),  # noqa: SIM115
        )
        await wait_for_http(f"http://127.0.0.1:{self.app_port}/health-check/ready")

    def start_target(self, target: str, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{target}-{port}.log", "wb")  # noqa: SIM115
        if target == "voice":
            env = base_env(
                OPENAI_API_KEY="sk-bench", OPENAI_REALTIME_URL=self.model_url, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                TWILIO_ACCOUNT_SID=ACCOUNT_SID, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                AI_SERVER_URL=f"http://127.0.0.1:{self.ai_port}", SWITCHBOARD_DRAIN_TIMEOUT_S="10",
                SWITCHBOARD_MAX_CALLS="100000",  # admission control off: the bench finds the limit itself
                APP_SERVER_URL=f"http://127.0.0.1:{self.app_port}" if self.app_process is not None else "",
                SWITCHBOARD_OUTBOX_DIR=str(self.workdir / "outbox"),
                **(extra_env or {}),
            )
            command = [str(REPO / ".venv/bin/switchboard"), "serve", "voice", "--host", "127.0.0.1", "--port", str(port)]
        else:
            env = base_env()
            command = [sys.executable, str(REPO / "bench/bare_relay.py"), "--port", str(port),
                       "--model-url", self.model_url]
        # nice -20: this machine is shared, and other processes on the server's core would otherwise
        # take CPU from it mid-run (the others' share is still measured and reported per run).
        return subprocess.Popen(["nice", "-n", str(NICE), "taskset", "-c", str(SERVER_CORE), *command], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)

    def start_dashboards(self, count: int) -> None:
        """`count` dashboard pages watching live calls on the App server (bench/dashboard_watchers.py, core 0)."""
        env = base_env(APP_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir}/app.db")
        subprocess.run([str(REPO / ".venv/bin/switchboard"), "users", "add", "--operator", "--email", "bench@ops.test"],
                       input=b"bench-dashboard-password\n", env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
        self.dashboards_process = subprocess.Popen(
            ["nice", "-n", str(NICE), "taskset", "-c", str(LOAD_CORE), sys.executable,
             str(REPO / "bench/dashboard_watchers.py"), f"http://127.0.0.1:{self.app_port}", "bench@ops.test",
             "bench-dashboard-password", "--count", str(count)],
            env=env, stdout=open(self.workdir / "dashboards.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )

    def stop(self) -> None:
        for process in (self.dashboards_process, self.ai_process, self.app_process):
            if process is not None:
                stop_process(process)
        if self.dashboards_process is not None:
            print((self.workdir / "dashboards.log").read_text().strip()[-2000:], flush=True)


# --------------------------------------------------------------------------- one run
def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # ns -> ms


async def place_call(gen: LoadGenerator, http: httpx.AsyncClient, target: str, port: int, index: int,
                     run_id: int, preopen: bool) -> FakeCaller:
    call_sid = f"CA{run_id:08x}{index:024x}"
    stream_sid = f"MZ{run_id:08x}{index:024x}"
    caller_number = f"+1555{7000000 + index:07d}"
    validator = RequestValidator(AUTH_TOKEN)
    parameters = {"bot_profile_key": "bench-support", "is_sip_call": "false", "original_caller_number": caller_number}
    if target == "voice":
        # Without a webhook the bench issues the call's stream URL itself (it holds the deployment's token),
        # naming no replica that pre-opened it: the stream opens a fresh session, as before.
        stream_url = issue_stream_url(f"http://127.0.0.1:{port}", derive_url_token_key(SERVICE_TOKEN),
                                      call_sid=call_sid, tenant="bench-support", replica="bench",
                                      now_s=time.time(), ttl_s=600)
        headers = {"X-Twilio-Signature": validator.compute_signature(stream_url, {})}
    else:
        stream_url = f"ws://127.0.0.1:{port}/"
        headers = {}
    webhook_ns = 0
    if preopen:
        base = f"http://127.0.0.1:{port}"
        form = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": caller_number, "To": TENANT_NUMBER,
                "Direction": "inbound", "CallStatus": "ringing"}
        signature = validator.compute_signature(base + "/twilio-voice-webhook", form)
        answer = await http.post(base + "/twilio-voice-webhook", data=form, headers={"X-Twilio-Signature": signature})
        answer.raise_for_status()
        found = dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', answer.text))
        if found.get("bot_profile_key") != "bench-support":
            raise RuntimeError(f"webhook did not route the call: {answer.text[:200]}")
        parameters = found
        webhook_ns = now_ns()
        if target == "voice":
            stream_url = re.findall(r'<Stream url="([^"]+)"', answer.text)[0]
            headers = {"X-Twilio-Signature": validator.compute_signature(stream_url, {})}
    caller = FakeCaller(gen, index, call_sid, stream_sid, parameters)
    caller.webhook_done_ns = webhook_ns  # type: ignore[attr-defined]
    caller.preopen = preopen  # type: ignore[attr-defined]
    await connect_caller(gen, stream_url, caller, headers)
    return caller


async def run_once(stack: Stack, gen: LoadGenerator, target: str, calls: int, seconds: float, scenario: Scenario,
                   ramp_per_s: float, run_id: int, obs: str | None = None,
                   sinks: Sinks | None = None) -> dict[str, Any]:
    gen.reset(scenario)
    port = free_port()
    sink_before = await sinks.stats() if sinks is not None else None
    process = stack.start_target(target, port, sinks.voice_env() if sinks is not None and obs == "on" else None)
    try:
        if target == "voice":
            await wait_for_http(f"http://127.0.0.1:{port}/health-check/ready")
        else:
            await wait_for_port(port)
        await asyncio.sleep(0.5)
        rss_idle = rss_mb(process.pid)
        lag = LoopLag(gen.samples)
        loop = asyncio.get_running_loop()
        ramp_start = loop.time()
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)) as http:
            async def one(index: int) -> None:
                await asyncio.sleep(max(0.0, ramp_start + index / ramp_per_s - loop.time()))
                # Voice: even calls come through the webhook (model pre-opened), odd ones stream only.
                try:
                    await place_call(gen, http, target, port, index, run_id,
                                     preopen=target == "voice" and index % 2 == 0)
                except (httpx.HTTPError, OSError, TimeoutError, RuntimeError) as exc:
                    gen.samples.count("calls_failed_setup")
                    gen.samples.count(f"setup_error:{type(exc).__name__}")

            async with asyncio.timeout(30 + calls / ramp_per_s), asyncio.TaskGroup() as tasks:
                for index in range(calls):
                    tasks.create_task(one(index))
        await asyncio.sleep(2.0)  # settle: every session open, greetings under way
        samples = gen.samples
        ai_pid = stack.ai_process.pid if stack.ai_process is not None else os.getpid()
        sink_pid = sinks.pid if sinks is not None else None
        cores0, ai0 = core_busy_s(), cpu_seconds(ai_pid)
        sink0 = cpu_seconds(sink_pid) if sink_pid is not None else 0.0
        cpu0, self0, wall0 = cpu_seconds(process.pid), process_cpu_s(), time.perf_counter()
        samples.window_start_ns = now_ns()
        rss_peak = rss_mb(process.pid)
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
            rss_peak = max(rss_peak, rss_mb(process.pid))
        samples.window_end_ns = now_ns()
        cpu1, self1, wall1 = cpu_seconds(process.pid), process_cpu_s(), time.perf_counter()
        cores1, ai1 = core_busy_s(), cpu_seconds(ai_pid)
        sink1 = cpu_seconds(sink_pid) if sink_pid is not None else 0.0
        await asyncio.sleep(0.5)  # stragglers sent inside the window
        lag.stop()
        for caller in gen.callers:
            caller.hang_up()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not all(c.closed for c in gen.callers):
                    await asyncio.sleep(0.05)
        open_at_stop = sum(1 for c in gen.callers if not c.closed)
        server_barge = await server_barge_in_reaction(port) if target == "voice" else {}
    finally:
        stop_process(process)  # after every call hung up: the voice server flushes Opik's batches as it stops
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(Path(stack.workdir / f"{target}-{port}.log").read_text()[-3000:], file=sys.stderr)
    window_s = wall1 - wall0
    row = summarize(gen, target, calls, window_s, cpu1 - cpu0, self1 - self0, rss_idle, rss_peak)
    row.update(server_barge)
    if obs is not None:
        row["observability"] = obs
    if sinks is not None and sink_before is not None:
        # Everything the sinks got from the start of this voice server to its exit (calls ended, batches
        # flushed); OTLP spans by service.name, the AI server's own exports included.
        sink = sink_delta(sink_before, await sinks.stats())
        sink["cpu_pct_window"] = 100 * (sink1 - sink0) / window_s
        sink["calls_ended"] = len(gen.callers) - open_at_stop  # each should give one Opik trace when "on"
        row["sink"] = sink
    # Other processes on this (shared) machine during the window, in % of a core, per core.
    row["foreign_core1_pct"] = max(0.0, 100 * ((cores1[SERVER_CORE] - cores0[SERVER_CORE]) - (cpu1 - cpu0)) / window_s)
    row["foreign_core0_pct"] = max(0.0, 100 * ((cores1[LOAD_CORE] - cores0[LOAD_CORE]) - (self1 - self0)
                                               - (ai1 - ai0) - (sink1 - sink0)) / window_s)
    return row


async def server_barge_in_reaction(port: int) -> dict[str, Any]:
    """The voice server's own barge-in reaction (speech_started received -> clear written), from its
    Prometheus histogram over the whole run: the bucket bound under which 50 % and 99 % of them fall."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return {}
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("switchboard_barge_in_reaction_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return {}
    total = buckets[-1][1]

    def bound_ms(q: float) -> float:
        return next(1000 * le for le, count in buckets if count >= q * total)

    return {"server_clear_n": int(total), "server_clear_p50_le_ms": bound_ms(0.5), "server_clear_p99_le_ms": bound_ms(0.99)}


def summarize(gen: LoadGenerator, target: str, calls: int, window_s: float, cpu_s: float, self_cpu_s: float,
              rss_idle: float, rss_peak: float) -> dict[str, Any]:
    s = gen.samples
    k = s.by_kind
    greet_pre = [c.first_media_ns - c.start_sent_ns for c in gen.callers if c.preopen and c.first_media_ns]  # type: ignore[attr-defined]
    greet_cold = [c.first_media_ns - c.start_sent_ns for c in gen.callers if not c.preopen and c.first_media_ns]  # type: ignore[attr-defined]
    gaps = [c.start_sent_ns - c.webhook_done_ns for c in gen.callers if c.preopen]  # type: ignore[attr-defined]
    up, down = k.get("up", []), k.get("down", [])
    row: dict[str, Any] = {
        "target": target, "calls": calls, "window_s": window_s,
        "up_p50": percentile(up, 0.5), "up_p99": percentile(up, 0.99), "up_max": percentile(up, 1.0),
        "down_p50": percentile(down, 0.5), "down_p99": percentile(down, 0.99), "down_max": percentile(down, 1.0),
        "clear_p50": percentile(k.get("barge_clear", []), 0.5), "clear_p99": percentile(k.get("barge_clear", []), 0.99),
        "cancel_p50": percentile(k.get("barge_cancel", []), 0.5),
        "cancel_p99": percentile(k.get("barge_cancel", []), 0.99),
        "barge_ins": len(k.get("barge_clear", [])),
        "keypad_message_p50": percentile(k.get("keypad_message", []), 0.5),
        "keypad_message_p99": percentile(k.get("keypad_message", []), 0.99),
        "keypad_messages": len(k.get("keypad_message", [])),
        "greet_pre_p50": percentile(greet_pre, 0.5), "greet_cold_p50": percentile(greet_cold, 0.5),
        "greet_pre_p99": percentile(greet_pre, 0.99), "greet_cold_p99": percentile(greet_cold, 0.99),
        "webhook_to_start_p50": percentile(gaps, 0.5),
        "cpu_core_pct": 100 * cpu_s / window_s,
        "cpu_ms_per_call_s": 1000 * cpu_s / window_s / calls,
        "rss_idle_mb": rss_idle, "rss_peak_mb": rss_peak, "rss_mb_per_call": (rss_peak - rss_idle) / calls,
        "loadgen_cpu_pct": 100 * self_cpu_s / window_s,
        "loadgen_lag_p99": percentile(k.get("loadgen_lag", []), 0.99),
        "up_sent": s.counts.get("up_sent", 0), "up_received": len(up),
        "down_sent": s.counts.get("down_sent", 0), "down_received": len(down),
        "dropped_calls": s.counts.get("calls_dropped_by_server", 0) + s.counts.get("calls_failed_setup", 0),
        "setup_errors": {key: v for key, v in s.counts.items() if key.startswith("setup_error")},
        "cancel_missing": s.counts.get("cancel_missing", 0),
        "truncates": s.counts.get("truncates", 0),
        "max_lead_ms": max((c.max_lead_ms for c in gen.callers), default=0.0),
        "cleared_ms": [round(x, 1) for c in gen.callers for x in c.cleared_ms],
        "frames_per_s": (len(up) + len(down)) / window_s,
    }
    lost = (row["up_sent"] - row["up_received"]) + (row["down_sent"] - row["down_received"])
    row["lost"] = lost
    row["holds"] = (
        row["up_p99"] is not None and row["down_p99"] is not None
        and row["up_p99"] <= P99_TARGET_MS and row["down_p99"] <= P99_TARGET_MS
        and row["dropped_calls"] == 0 and lost <= 0.001 * max(1, row["up_sent"] + row["down_sent"])
    )
    return row


# --------------------------------------------------------------------------- report
def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


HEADER = ("| server | calls | up p50 | up p99 | down p50 | down p99 | clear p50/p99 | cancel p50/p99 | "
          "greeting pre-open / at start (p50) | CPU % core | CPU ms/call·s | RSS MB/call | lost | "
          "loadgen CPU %, lag p99 | others' CPU % core0/core1 | p99 ≤ 20 ms |")
RULE = "|" + "---|" * 16


def server_label(r: dict[str, Any]) -> str:
    if r["target"] != "voice":
        return "bare relay"
    return f"switchboard (obs {r['observability']})" if "observability" in r else "switchboard"


def server_clear(r: dict[str, Any]) -> str:
    """The voice server's own reaction (its histogram): ' (server ≤a/≤b)' in ms for p50/p99."""
    if "server_clear_p99_le_ms" not in r:
        return ""
    return f" (server ≤{r['server_clear_p50_le_ms']:g}/≤{r['server_clear_p99_le_ms']:g})"


def table_row(r: dict[str, Any]) -> str:
    greet = (f"{fmt(r['greet_pre_p50'], 1)} / {fmt(r['greet_cold_p50'], 1)}" if r["target"] == "voice"
             else f"- / {fmt(r['greet_cold_p50'], 1)}")
    return (f"| {server_label(r)} | {r['calls']} | {fmt(r['up_p50'])} | "
            f"{fmt(r['up_p99'])} | {fmt(r['down_p50'])} | {fmt(r['down_p99'])} | "
            f"{fmt(r['clear_p50'])} / {fmt(r['clear_p99'])}{server_clear(r)} | "
            f"{fmt(r['cancel_p50'])} / {fmt(r['cancel_p99'])} | {greet} | {fmt(r['cpu_core_pct'], 0)} | {fmt(r['cpu_ms_per_call_s'], 3)} | "
            f"{fmt(r['rss_mb_per_call'], 3)} | {r['lost']}/{r['up_sent'] + r['down_sent']} | "
            f"{fmt(r['loadgen_cpu_pct'], 0)}, {fmt(r['loadgen_lag_p99'])} | "
            f"{fmt(r.get('foreign_core0_pct'), 0)}/{fmt(r.get('foreign_core1_pct'), 0)} | {'yes' if r['holds'] else 'NO'} |")


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    by = {(r["target"], r.get("observability"), r["calls"]): r for r in rows if r.get("kind") == "steady"}
    for (target, obs, calls), r in sorted(by.items(), key=lambda kv: kv[0][2]):
        relay = by.get(("relay", None, calls))
        if target != "voice" or relay is None:
            continue
        def ratio(key: str, r: dict[str, Any] = r, relay: dict[str, Any] = relay) -> str:
            a, b = r.get(key), relay.get(key)
            return f"{a / b:.1f}x" if a and b else "-"
        label = f"{calls} calls" if obs is None else f"{calls} calls, obs {obs}"
        lines.append(f"- {label}: up p99 {ratio('up_p99')}, down p99 {ratio('down_p99')}, "
                     f"CPU {ratio('cpu_core_pct')} of the bare relay")
    return lines


def observability_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per call count run with observability both off and on: what "on" costs (medians over the rounds)."""
    by: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") == "steady" and r["target"] == "voice" and "observability" in r:
            by.setdefault((r["calls"], r["observability"]), []).append(r)
    lines = []
    for calls in sorted({c for c, _ in by}):
        offs, ons = by.get((calls, "off")), by.get((calls, "on"))
        if not offs or not ons:
            continue

        def median(runs: list[dict[str, Any]], key: str) -> float | None:
            values = sorted(v for v in (r.get(key) for r in runs) if v is not None)
            return statistics.median(values) if values else None

        a, b = median(offs, "cpu_ms_per_call_s"), median(ons, "cpu_ms_per_call_s")
        cost = f"{100 * (b - a) / a:+.1f} %" if a and b is not None else "-"
        each = ", ".join(f"{r['cpu_ms_per_call_s']:.3f}" for r in offs) + " vs " + ", ".join(
            f"{r['cpu_ms_per_call_s']:.3f}" for r in ons)
        lines.append(f"{calls} calls: observability on costs {cost} CPU per call·s (median of {len(offs)}/{len(ons)} "
                     f"runs: {fmt(a, 3)} -> {fmt(b, 3)} ms; each run {each}), "
                     f"up p99 {fmt(median(offs, 'up_p99'))} -> {fmt(median(ons, 'up_p99'))} ms, "
                     f"down p99 {fmt(median(offs, 'down_p99'))} -> {fmt(median(ons, 'down_p99'))} ms")
    return lines


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()
    return f"nproc {nproc}, {model}"


def package_versions() -> str:
    from importlib.metadata import version
    names = ["websockets", "uvicorn", "uvloop", "orjson", "picows", "httpx"]
    found = []
    for name in names:
        with contextlib.suppress(Exception):
            found.append(f"{name} {version(name)}")
    return ", ".join(found) + f", Python {sys.version.split()[0]}"


# --------------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    counts = [int(x) for x in args.calls.split(",") if x.strip()]
    targets = ["voice", "relay"] if args.relay else ["voice"]
    modes = [x.strip() for x in args.observability.split(",") if x.strip()]
    if not modes or any(m not in OBS_MODES for m in modes) or len(set(modes)) != len(modes):
        raise SystemExit(f"--observability: a comma list among {','.join(OBS_MODES)}, got {args.observability!r}")
    # Default (off only): rows and report exactly as before, no sinks. Otherwise every voice row says its mode.
    obs_modes: list[str | None] = [None] if modes == ["off"] else list(modes)
    scenario = Scenario(session_created_delay_s=args.model_delay_ms / 1000, barge_in_by=args.barge_in_by)
    gen = LoadGenerator(scenario)
    await gen.start_model_server()
    rows: list[dict[str, Any]] = []
    run_id = int(time.time()) & 0xFFFFFF
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        sinks = Sinks(Path(tmp)) if obs_modes != [None] else None
        stack = Stack(Path(tmp), gen.model_port)
        try:
            if sinks is not None:
                sinks.start()
                await wait_for_http(sinks.stats_url)
                if "on" in modes:  # the AI server is shared by every run: traced for all of them
                    stack.ai_extra_env = sinks.otel_env("switchboard-ai")
            await stack.start_ai()
            if args.app_server:
                await stack.start_app()
                if args.dashboards:
                    stack.start_dashboards(args.dashboards)

            async def run(target: str, calls: int, seconds: float, scn: Scenario, kind: str,
                          obs: str | None = None) -> dict[str, Any]:
                nonlocal run_id
                own = [p.pid for p in (stack.ai_process, stack.app_process, stack.dashboards_process, sinks and sinks.process) if p is not None]
                for attempt in range(2):
                    await wait_for_quiet_machine(own)
                    run_id += 1
                    row = await run_once(stack, gen, target, calls, seconds, scn, args.ramp_per_s, run_id,
                                         obs if target == "voice" else None, sinks if target == "voice" else None)
                    row["kind"], row["attempt"] = kind, attempt + 1
                    busy = max(row["foreign_core0_pct"], row["foreign_core1_pct"])
                    if row["holds"] or busy < 10.0:
                        break
                    print(f"(other processes used {busy:.0f}% of a core during that run: running it again)",
                          flush=True)
                rows.append(row)
                print(table_row(row), flush=True)
                return row

            print(HEADER)
            print(RULE, flush=True)
            last: dict[str, Any] | None = None

            async def run_all(calls: int) -> dict[str, Any]:
                """Every target at this call count, the voice server once per observability mode (in the
                listed order, back to back so drift hits both); returns the first mode's voice row."""
                first: dict[str, Any] | None = None
                for target in targets:
                    for obs in (obs_modes * args.obs_rounds if target == "voice" else [None]):
                        row = await run(target, calls, args.seconds, scenario, "steady", obs)
                        if target == "voice" and first is None:
                            first = row
                assert first is not None
                return first

            for calls in counts:
                last = await run_all(calls)
            if args.find_max and last is not None:
                # Step up while the voice server (first observability mode listed) holds p99 <= 20 ms
                # (bounded), else step down once.
                step, calls, steps = 100, last["calls"], 0
                holds = last["holds"]
                while steps < args.max_steps:
                    steps += 1
                    calls = calls + step if holds else max(1, calls - step // 2)
                    voice_row = await run_all(calls)
                    if voice_row["holds"] != holds:
                        break
                    holds = voice_row["holds"]
            if args.pacing:
                burst = Scenario(session_created_delay_s=args.model_delay_ms / 1000, burst=True, response_ms=3000,
                                 barge_in_at_ms=1500)
                for target in targets:  # pacing is not about observability: first mode only
                    await run(target, 1, 10, burst, "burst", obs_modes[0])
        finally:
            stack.stop()
            if sinks is not None:
                sinks.stop()
    await gen.stop_model_server()
    comparison = observability_lines(rows)
    if comparison:
        print()
        print("\n".join(comparison), flush=True)
    report = render_report(rows, args)
    print()
    print(report)
    if args.output:
        out = REPO / args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"written to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


def render_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    steady = [r for r in rows if r["kind"] == "steady"]
    burst = [r for r in rows if r["kind"] == "burst"]
    relay_holding = [r["calls"] for r in steady if r["target"] == "relay" and r["holds"]]
    held = []
    for obs in dict.fromkeys(r.get("observability") for r in steady if r["target"] == "voice"):
        voice = [r for r in steady if r["target"] == "voice" and r.get("observability") == obs]
        holding = [str(r["calls"]) for r in voice if r["holds"]]
        failing = [str(r["calls"]) for r in voice if not r["holds"]]
        held.append(f"{'switchboard' if obs is None else f'switchboard (obs {obs})'} held at "
                    f"{', '.join(holding) or 'none'}; failed at {', '.join(failing) or 'none'}")
    if not held:
        held.append("switchboard held at none; failed at none")
    comparison = observability_lines(rows)
    obs_notes: list[str] = []
    if any("observability" in r for r in rows):
        obs_notes = [
            f"- Observability ({args.observability}): each voice run is done once per mode, back to back in "
            "that order for each call count. \"on\" starts the voice server with `OPIK_URL_OVERRIDE` (a fake Opik "
            "backend), `OPIK_PROJECT_NAME=bench`, `OTEL_EXPORTER_OTLP_ENDPOINT` (an OTLP/HTTP sink), "
            "`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, `OTEL_SERVICE_NAME=switchboard-voice`, "
            "`OTEL_TRACES_EXPORTER=otlp`, `OTEL_METRICS_EXPORTER=none`, `OTEL_LOGS_EXPORTER=none`, "
            "`OTEL_BSP_SCHEDULE_DELAY=1000`; \"off\" with no OPIK_*/OTEL_* variable. Both sinks are one "
            f"small process (bench/sinks.py, core {LOAD_CORE}, not the load generator) answering 204/200 at once "
            "and counting what they get; `sink` in each voice run's JSON row is what they received from that "
            "voice server's start to its exit (calls hung up, batches flushed), OTLP spans by `service.name`. "
            + ("The AI server, shared by every run, exports OTel spans to the same sink in all runs "
               "(`OTEL_SERVICE_NAME=switchboard-ai`, same other OTEL_* variables), \"off\" ones included. "
               if "on" in args.observability.split(",") else "")
            + "Prometheus metrics are always on.",
        ]
    command = ".venv/bin/python bench/bridge_latency.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Benchmarks",
        "",
        "## Bridge latency: voice server vs bare relay",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Software: {package_versions()}",
        f"- Command: `{command.strip()}`",
        f"- Server under test pinned with `nice -n {NICE} taskset -c {SERVER_CORE}` (this machine is shared with "
        "other sessions' test runs; their CPU use during each window is in the table); load generator (one process: N fake Twilio "
        f"callers + one fake Realtime server, picows + uvloop + orjson) and the AI server on core {LOAD_CORE}.",
        f"- Each run: calls ramped at {args.ramp_per_s:g}/s, 2 s settle, then a {args.seconds:g} s window. "
        "Callers send a 20 ms `media` frame every 20 ms and echo marks when the audio before them has played "
        "(honouring `clear`); the fake model streams 20 ms deltas every 20 ms (real time, so pacing never holds "
        "them), 2 s per response; every second response is interrupted 1 s in (`speech_started`), the others "
        "finish and the caller talks 0.8 s later. `session.created` is delayed "
        f"{args.model_delay_ms:g} ms to model the network.",
        "- Latencies in ms, added by the server plus loopback plus the load generator's own loop delay "
        "(shown as loadgen lag). up = caller `media` sent -> `input_audio_buffer.append` with that payload "
        "received by the model; down = `response.output_audio.delta` sent -> `media` with that payload received by "
        "the caller; clear/cancel = `speech_started` sent -> `clear` at the caller / `response.cancel` at the model "
        "(barge-ins during an active response; in brackets the voice server's own reaction, `speech_started` read "
        "-> `clear` written, from its Prometheus histogram: the bucket bounds holding 50 % / 99 % of them); greeting = `start` sent -> first `media` at the caller, "
        "pre-open = webhook answered first (model session opened at webhook time), at start = stream only "
        "(session opened when the stream starts). CPU and RSS from /proc of the server process over the window; "
        "RSS MB/call = (peak RSS - idle RSS) / calls. lost = frames sent in the window and never received.",
        *obs_notes,
        "",
        HEADER,
        RULE,
        *[table_row(r) for r in steady],
        "",
        "Ratio switchboard / bare relay:",
        "",
        *ratio_lines(rows),
        "",
        f"Calls per core at p99 <= {P99_TARGET_MS:g} ms both ways, no loss: {'. '.join(held)}. "
        f"Bare relay held at {', '.join(map(str, relay_holding)) or 'none'}.",
        "",
    ]
    if comparison:
        lines += [
            "### Observability off vs on (target: under 5 % more CPU per call)",
            "",
            *[f"- {line}" for line in comparison],
            "",
        ]
    if burst:
        lines += [
            "### What pacing does (1 call, model audio in a burst as the real service sends it)",
            "",
            "The fake model sends each 3 s response at once; every second response is interrupted 1.5 s after it "
            "started. `max lead` is the most unplayed audio ever buffered at the caller (Twilio's buffer); "
            "`cleared` is the unplayed audio each `clear` threw away; `down p50/max` is how long deltas waited "
            "before reaching the caller.",
            "",
            "| server | down p50 | down max | max lead at caller (ms) | cleared per barge-in (ms) |",
            "|---|---|---|---|---|",
        ]
        for r in burst:
            lines.append(f"| {server_label(r)} | {fmt(r['down_p50'])} | "
                         f"{fmt(r['down_max'])} | {fmt(r['max_lead_ms'], 0)} | "
                         f"{', '.join(fmt(x, 0) for x in r['cleared_ms'][:6]) or '-'} |")
        lines.append("")
    lines.append("Raw rows (JSON, one per run):")
    lines.append("")
    lines.append("```")
    for r in rows:
        compact = {key: (round(v, 3) if isinstance(v, float) else v) for key, v in r.items() if key != "cleared_ms"}
        lines.append(json.dumps(compact))
    lines.append("```")
    lines.append("")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,50,200", help="comma-separated concurrent call counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    parser.add_argument("--relay", action=argparse.BooleanOptionalAction, default=True, help="run the bare relay too")
    parser.add_argument("--find-max", action=argparse.BooleanOptionalAction, default=True,
                        help="step the call count from the last one while p99 <= 20 ms holds")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--pacing", action=argparse.BooleanOptionalAction, default=True,
                        help="also run 1 call with burst model audio to show pacing")
    parser.add_argument("--ramp-per-s", type=float, default=50.0, help="new calls per second during ramp-up")
    parser.add_argument("--model-delay-ms", type=float, default=150.0, help="fake model's session.created delay")
    parser.add_argument("--observability", default="off",
                        help="comma list among off,on: run the voice server once per mode at each call count "
                             "(on = Opik + OpenTelemetry to local sinks) and compare")
    parser.add_argument("--app-server", action=argparse.BooleanOptionalAction, default=True,
                        help="run an App server (core 0) for the voice server's conversation records; without it "
                             "APP_SERVER_URL is empty and nothing is recorded")
    parser.add_argument("--dashboards", type=int, default=0,
                        help="this many dashboard pages watch live calls' event streams on the App server "
                             "(bench/dashboard_watchers.py) for every run")
    parser.add_argument("--obs-rounds", type=int, default=1,
                        help="repeat the --observability modes this many times per call count (alternating); "
                             "the comparison uses the median of each mode")
    parser.add_argument("--barge-in-by", choices=("speech", "key"), default="speech",
                        help="key: the caller interrupts by pressing keys (Twilio dtmf) instead of the model's VAD; "
                             "keypad_message = last key sent -> the digits' user message at the model "
                             "(SWITCHBOARD_DTMF_PAUSE_MS, 2000 by default, plus the bridge's own time)")
    parser.add_argument("--output", default="var/bench/bridge_latency.md",
                        help="report file ('' for none); docs/benchmarks.md is edited by hand from these")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))

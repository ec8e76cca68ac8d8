"""Observability overhead: voice-server CPU per call with Opik + OpenTelemetry off, then on, same calls.

Starts the AI and App servers (`switchboard serve ai|app`) and, per run, a fresh voice server
(`switchboard serve voice`, pinned to core 1 with taskset when there are two cores). This process plays
the callers (TwilioCaller), the model (FakeRealtimeServer), an Opik backend that records what it gets
(tests/observability/fake_opik.py) and an OTLP/HTTP sink. Each call: greeting, three turns, one
knowledge tool call, hang-up. Runs alternate off/on so drift hits both. CPU is the voice server's own
(utime + stime from /proc) from just before the first call to 3 s after the last, which covers the
Opik SDK's batch flush (every 2 s) and the OTel batch export (OTEL_BSP_SCHEDULE_DELAY set to 1 s here).

    .venv/bin/python bench/observability_overhead.py [--calls 20] [--rounds 2]

Prometheus metrics are always on (they are not optional), so "off" still counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.observability.fake_opik import FakeOpik  # noqa: E402

from switchboard.fakes.realtime_server import FakeRealtimeServer, function_call  # noqa: E402
from switchboard.simulator.twilio_caller import TwilioCaller  # noqa: E402

AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "b" * 32
SERVICE_TOKEN = "bench-service-token-0123456789"
API_KEY = "sk-bench-not-a-real-key"
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
    credits: 500
    knowledge:
      - text: "Stores open 9 to 6 on weekdays. Returns are free within 30 days."
        title: Policies
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class OtlpSink:
    """Accepts OTLP/HTTP exports (answers 200 with an empty ExportTraceServiceResponse) and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class RunResult:
    config: str
    calls: int
    completed: int
    cpu_s: float
    opik_spans: int
    opik_traces: int
    otlp_requests: int

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s * 1000.0 / max(self.completed, 1)


def _pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 and _has_taskset() else []


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


async def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/health-check/ready")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} never became ready")
            await asyncio.sleep(0.2)


def _start(service: str, port: int, env: dict[str, str], core: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [*_pin(core), str(REPO / ".venv/bin/switchboard"), "serve", service, "--host", "127.0.0.1",
               "--port", str(port)]
    log = log_path.open("ab")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(log_path.parent))


async def _stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
        await asyncio.sleep(0.05)


async def _one_call(voice_url: str, model: FakeRealtimeServer, index: int, placed: asyncio.Lock) -> bool:
    """One scripted call; False (not counted as completed) when any step times out."""
    try:
        return await _scripted_call(voice_url, model, index, placed)
    except TimeoutError:
        return False


async def _scripted_call(voice_url: str, model: FakeRealtimeServer, index: int, placed: asyncio.Lock) -> bool:
    async with TwilioCaller(voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as caller:
        async with placed:  # place calls one at a time so session `index` is this call's
            answer = await caller.place_call(to=TENANT_NUMBER, from_="+15557654321")
            if answer.status_code != 200:
                return False
            session = await model.wait_for_session(timeout_s=10, index=index)
        await caller.connect_stream()
        await session.wait_for_event("response.create", timeout_s=10)
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, 20)
        for _ in range(3):
            heard = len(caller.marks_echoed)
            await session.speech_started()
            await asyncio.sleep(0.4)
            await session.speech_stopped()
            await caller.wait_for(lambda h=heard: len(caller.marks_echoed) > h and not caller.has_unplayed_audio, 20)
        active = session.active_response
        if active is not None:  # the last answer's audio has played; its response.done may still be coming
            await active.wait_for_done(timeout_s=10)
        before = len(session.received)
        response = await session.start_response(function_call("get_knowledge", {"query": "opening hours"}))
        await response.wait_for_done(timeout_s=10)
        await session.wait_for_event("response.create", timeout_s=20, after_index=before)
        await caller.wait_for_agent_quiet(0.5, timeout_s=20)
        await caller.hang_up()
        return True


async def _run(config: str, calls: int, base_env: dict[str, str], workdir: Path, opik: FakeOpik,
               otlp: OtlpSink) -> RunResult:
    env = dict(base_env)
    if config in {"on", "opik"}:
        env.update(OPIK_URL_OVERRIDE=opik.url, OPIK_PROJECT_NAME="bench", OPIK_WORKSPACE="default")
    if config in {"on", "otel"}:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY="1000")
    spans_before, traces_before, otlp_before = len(opik.spans()), len(opik.traces()), otlp.requests
    port = _free_port()
    voice_url = f"http://127.0.0.1:{port}"
    async with FakeRealtimeServer(api_key=API_KEY) as model:
        env["OPENAI_REALTIME_URL"] = model.realtime_url
        process = _start("voice", port, env, core=1, log_path=workdir / f"voice-{config}.log")
        try:
            await _wait_ready(voice_url)
            await asyncio.sleep(1.0)  # start-up work done
            placed = asyncio.Lock()
            cpu_before = process_cpu_s(process.pid)
            async with asyncio.TaskGroup() as tasks:
                results = [tasks.create_task(_one_call(voice_url, model, i, placed), name=f"call-{i}")
                           for i in range(calls)]
            await asyncio.sleep(3.0)  # the Opik SDK flushes its batches every 2 s
            cpu_after = process_cpu_s(process.pid)
            completed = sum(1 for r in results if r.result())
        finally:
            await _stop(process)
    return RunResult(config=config, calls=calls, completed=completed, cpu_s=cpu_after - cpu_before,

                     opik_spans=len(opik.spans()) - spans_before, opik_traces=len(opik.traces()) - traces_before,
                     otlp_requests=otlp.requests - otlp_before)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --configs")
    parser.add_argument("--configs", default="off,on",
                        help="comma-separated, run in this order each round: off, on, opik (Opik only), otel (OTel only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-obs-bench-") as tmp, FakeOpik() as opik, OtlpSink() as otlp:
        workdir = Path(tmp)
        tenants = workdir / "tenants.yaml"
        tenants.write_text(TENANT_YAML)
        ai_port, app_port = _free_port(), _free_port()
        base_env = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("OPIK_", "OTEL_"))
        }
        base_env.update(
            SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            OPENAI_API_KEY=API_KEY, AI_SERVER_URL=f"http://127.0.0.1:{ai_port}",
            APP_SERVER_URL=f"http://127.0.0.1:{app_port}", AI_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/ai.db",
            APP_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/app.db", SWITCHBOARD_OUTBOX_DIR=str(workdir / "outbox"),
            SWITCHBOARD_LOG_LEVEL="WARNING", TWILIO_API_BASE_URL="http://127.0.0.1:9",
        )
        await asyncio.to_thread(
            subprocess.run, [str(REPO / ".venv/bin/switchboard"), "tenants", "load", str(tenants)], env=base_env,
            check=True, capture_output=True, cwd=tmp)
        ai = _start("ai", ai_port, base_env, core=0, log_path=workdir / "ai.log")
        app = _start("app", app_port, base_env, core=0, log_path=workdir / "app.log")
        results: list[RunResult] = []
        try:
            await _wait_ready(f"http://127.0.0.1:{ai_port}")
            await _wait_ready(f"http://127.0.0.1:{app_port}")
            for _ in range(args.rounds):
                for config in args.configs.split(","):
                    result = await _run(config, args.calls, base_env, workdir, opik, otlp)
                    results.append(result)
                    print(f"  run {config:>3}: {result.completed}/{result.calls} calls, voice CPU "
                          f"{result.cpu_s:.2f} s = {result.cpu_ms_per_call:.1f} ms/call, Opik spans "
                          f"{result.opik_spans}, traces {result.opik_traces}, OTLP exports {result.otlp_requests}",
                          flush=True)
        finally:
            await _stop(ai)
            await _stop(app)
    _report(results, args.calls)
    return 0


def _report(results: list[RunResult], calls: int) -> None:
    def per_call(config: str) -> float:
        runs = [r for r in results if r.config == config]
        return sum(r.cpu_s for r in runs) * 1000.0 / max(sum(r.completed for r in runs), 1)

    labels = {"off": "off (Prometheus only)", "on": "on (Opik + OTel + Prometheus)", "opik": "Opik only",
              "otel": "OpenTelemetry only"}
    configs = list(dict.fromkeys(r.config for r in results))
    print()
    print(f"observability overhead, {calls} concurrent calls per run")
    print("| observability | runs | voice CPU per call | vs off |")
    print("|---|---|---|---|")
    off = per_call("off") if "off" in configs else None
    for config in configs:
        value = per_call(config)
        versus = f"{100.0 * (value - off) / off:+.1f} %" if off else "-"
        runs = sum(1 for r in results if r.config == config)
        print(f"| {labels.get(config, config)} | {runs} | {value:.1f} ms | {versus} |")
    print("target: under 5 % more CPU per call with observability on")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""Warm-transfer bench: tool call -> Twilio REST update, and the whisper webhook's answer time.

1. Tool call -> REST update: N concurrent calls through the whole stack on loopback, in this process (the
   test harness: real voice server under uvicorn, fake Realtime model, fake Twilio REST, real AI and App
   servers in-process). Each call's model asks `transfer_to_human`; the voice server has the transition
   line spoken (the fake model answers it with `--line-ms` of audio, played in real time), then sends the
   REST update. Reported: tool call sent by the model -> REST update received, and that minus the line's
   audio (what the server itself adds: pacing lead, marks, the update's HTTP round trip).
2. Human answers -> whisper TwiML served: a voice server (`switchboard serve voice`, pinned with
   `taskset -c 1` when available) gets signed `<Number url>` POSTs as Twilio sends them; latency per
   request at the client (loopback), sequential and with `--concurrency` in flight.

    .venv/bin/python bench/transfer_latency.py [--calls 20] [--line-ms 200] [--whisper-requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from switchboard.bridge.warm_transfer import WHISPER_PATH, WHISPER_PURPOSE, HandOver, HandOverTokens  # noqa: E402
from switchboard.fakes.realtime_server import FakeRealtimeServer, function_call, stream_audio  # noqa: E402
from tests.bridge.harness import API_KEY, AUTH_TOKEN, voice_stack  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, values: list[float]) -> str:
    return (f"{label}: n={len(values)} p50 {pct(values, 0.5):.1f} ms, p99 {pct(values, 0.99):.1f} ms, "
            f"max {max(values):.1f} ms")


async def tool_call_to_rest_update(calls: int, line_ms: int) -> list[float]:
    model = FakeRealtimeServer(api_key=API_KEY)
    model.on("response.create", stream_audio(ms=line_ms, transcript="I'm transferring you now."))
    loop = asyncio.get_running_loop()
    arrived: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with voice_stack(Path(tmp), model=model) as stack:
            stack.twilio_rest.human = "busy"
            stack.twilio_rest.on_update(lambda request: arrived.setdefault(request.call_sid, loop.time()))

            async def one(index: int) -> float:
                async with stack.caller() as caller:
                    await caller.place_call(to="+15551230001", from_=f"+1555700{index:04d}")
                    session = await stack.model.wait_for_session(timeout_s=30, index=index)
                    await caller.connect_stream()
                    await session.wait_for_sent("response.done", timeout_s=30)
                    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio,
                                          timeout_s=30)
                    started = loop.time()
                    await session.start_response(function_call(
                        "transfer_to_human", {"reason": "bench", "summary": "A bench caller wants a person."}))
                    await caller.wait_for(lambda: caller.call_sid in arrived, timeout_s=30)
                    return (arrived[caller.call_sid] - started) * 1000.0

            results: list[float] = []
            for index in range(calls):  # placed one after another: each session index is known
                results.append(await one(index))
            return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def whisper_served(requests: int, concurrency: int) -> tuple[list[float], list[float]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service_token = "bench-service-token-" + os.urandom(8).hex()
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SWITCHBOARD_SERVICE_TOKEN": service_token,
           "PUBLIC_BASE_URL": base, "APP_SERVER_URL": "", "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "SWITCHBOARD_OUTBOX_DIR": tempfile.mkdtemp()}
    env.pop("OPENAI_API_KEY", None)
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    process = subprocess.Popen([*pin, str(REPO / ".venv/bin/switchboard"), "serve", "voice", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10.0)) as http:
            for _ in range(200):
                try:
                    if (await http.get("/health-check/live")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            tokens = HandOverTokens(service_token)
            validator = RequestValidator(AUTH_TOKEN)
            hand_over = HandOver(call_sid="CA" + "1" * 32, tenant="bench", company="Bench Co",
                                 caller_number="+15557654321", reason="wants a person",
                                 summary="Order A-1001 arrived damaged; wants a replacement.",
                                 message_id="tool:call_1", seq=3)
            url = f"{base}{WHISPER_PATH}/{tokens.sign(hand_over, purpose=WHISPER_PURPOSE, now_s=time.time())}"
            params = {"AccountSid": "AC" + "0" * 32, "CallSid": "CA" + "2" * 32, "ParentCallSid": "CA" + "1" * 32,
                      "CallStatus": "in-progress", "Direction": "outbound-dial", "From": "+15557654321",
                      "To": "+15559990000"}
            headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}

            async def once() -> float:
                started = time.perf_counter()
                response = await http.post(url, data=params, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000.0
                if response.status_code != 200 or "<Say>" not in response.text:
                    raise RuntimeError(f"whisper answered {response.status_code}: {response.text[:200]}")
                return elapsed

            for _ in range(50):  # warm-up
                await once()
            sequential = [await once() for _ in range(requests)]
            concurrent: list[float] = []

            async def worker() -> None:
                for _ in range(requests // concurrency):
                    concurrent.append(await once())

            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(worker())
            return sequential, concurrent
    finally:
        process.terminate()
        process.wait(timeout=15)


async def main(args: argparse.Namespace) -> int:
    print(f"# transfer bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cores: {os.cpu_count()}")
    rest = await tool_call_to_rest_update(args.calls, args.line_ms)
    print(line(f"tool call -> REST update ({args.line_ms} ms transition line played)", rest))
    print(line("  minus the line's audio (server's own share)", [v - args.line_ms for v in rest]))
    sequential, concurrent = await whisper_served(args.whisper_requests, args.concurrency)
    print(line("whisper POST -> TwiML served, sequential", sequential))
    print(line(f"whisper POST -> TwiML served, {args.concurrency} in flight", concurrent))
    print(f"(mean sequential {statistics.fmean(sequential):.2f} ms)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--line-ms", type=int, default=200)
    parser.add_argument("--whisper-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    sys.exit(asyncio.run(main(parser.parse_args())))

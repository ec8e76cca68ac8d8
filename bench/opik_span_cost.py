"""CPU per Opik span: the opik SDK's own pipeline vs. the voice server's sender (OpikTracer).

A fake Opik backend (tests/observability/fake_opik.py) runs in a child process, so its CPU is not
counted. This process records N response spans (usage, cost, metadata as the voice server writes them)
and sends them, then prints the CPU (user + system, all threads) per span for:

- the SDK: `opik.Opik().span(...)` for each, then `flush()`;
- ours: `OpikTracer` observers (`response_done` per span, `call_ended` per 5 spans), sent by its task.

    .venv/bin/python bench/opik_span_cost.py [--spans 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAKE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.observability.fake_opik import FakeOpik
with FakeOpik() as fake:
    print(fake.url, flush=True)
    time.sleep(3600)
"""

USAGE = {"total_tokens": 1200, "input_tokens": 1000, "output_tokens": 200,
         "input_token_details": {"text_tokens": 800, "audio_tokens": 200, "cached_tokens": 0},
         "output_token_details": {"text_tokens": 50, "audio_tokens": 150}}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sdk_cost(url: str, n: int) -> float:
    import opik
    from opik import id_helpers

    client = opik.Opik(host=url, _show_misconfiguration_message=False)
    client.flush(timeout=10)
    now = dt.datetime.now(dt.UTC)
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200, "input_text_tokens": 800,
             "input_audio_tokens": 200, "output_text_tokens": 50, "output_audio_tokens": 150}
    start = cpu_s()
    trace_id = id_helpers.generate_id()
    for i in range(n):
        client.span(trace_id=trace_id, name="response", type="llm", start_time=now, end_time=now,
                    metadata={"response_id": f"resp_{i}", "status": "completed", "cost_usd": 0.01},
                    output={"status": "completed"}, usage=usage, model="gpt-realtime", provider="openai",
                    total_cost=0.01)
    client.flush(timeout=60)
    spent = cpu_s() - start
    client.end(timeout=10)
    return spent


async def ours_cost(url: str, n: int) -> float:
    from switchboard.bridge.opik_observer import OpikTracer
    from switchboard.bridge.timeline import TurnTimeline
    from switchboard.clock import SystemClock
    from switchboard.pricing import load_price_table

    clock = SystemClock()
    tracer = OpikTracer.from_environment({"OPIK_URL_OVERRIDE": url}, prices=load_price_table({}),
                                         vendor="openai", model="gpt-realtime", clock=clock)
    sender = asyncio.create_task(tracer.run(), name="opik-sender")
    await asyncio.sleep(0.2)
    start = cpu_s()
    for call in range(n // 5):
        observer = tracer.observer()
        observer.call_started(call_sid=f"CA{call:032d}", tenant="bench", caller_masked="+1******0000",
                              is_sip_call=False)
        for response in range(5):
            observer.response_done(response_id=f"resp_{response}", status="completed", usage=USAGE,
                                   started_at=None, ended_at=clock.now())
        observer.call_ended(end_reason="caller_hung_up", duration_s=30.0, usage={}, timeline=TurnTimeline())
    await tracer.aclose(60)
    spent = cpu_s() - start
    sender.cancel()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2000)
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, "-c", FAKE, str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        for name, value in {"OPIK_SENTRY_ENABLE": "false", "OPIK_ANALYTICS_ENABLE": "false",
                            "OPIK_CONSOLE_LOGGING_LEVEL": "WARNING"}.items():
            os.environ.setdefault(name, value)
        ours = asyncio.run(ours_cost(url, args.spans))
        sdk = sdk_cost(url, args.spans)
        print(f"CPU per span ({args.spans} spans, sent to a local fake Opik):")
        print(f"- opik SDK (Opik.span + flush): {1000 * sdk / args.spans:.3f} ms")
        print(f"- voice server (OpikTracer, traces included): {1000 * ours / args.spans:.3f} ms")
    finally:
        fake.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

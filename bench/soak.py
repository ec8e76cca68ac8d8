"""Soak bench (issue 4): N concurrent calls of D seconds each against ONE voice server process.

The voice server (`switchboard serve voice`, `nice -n -20 taskset -c 1`) talks to the AI and App servers
(real processes, core 0) and to this process (core 0), the load generator of bench/loadgen.py: N fake
Twilio callers (a 20 ms `media` frame every 20 ms, marks echoed when played, `clear` honoured) and one
fake Realtime server (20 ms audio deltas at real time, 2 s per response, every 3rd response interrupted
1 s in by `speech_started`). Every frame carries a unique payload, so a frame that never arrives is
counted as lost, and both ends of every latency sample are read from this process's clock.

Three waves against the same process: warm-up (N calls, --warmup-s each), the soak (N calls, D s each)
and a check wave (N calls, --warmup-s each); after each, all calls have ended and RSS is read idle.
Growth per completed call = (idle RSS after the soak - idle RSS after warm-up) / N, checked again with
the third wave. Each caller hangs up D s after it connected (calls start --ramp-per-s apart, so the
hang-ups are staggered); 1 s before, its model session stops starting audio, so nothing is in flight
at the hang-up and every frame sent must arrive.

    .venv/bin/python bench/soak.py [--calls 100] [--seconds 300] [--doc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_latency import (  # noqa: E402
    LOAD_CORE,
    NICE,
    REPO,
    SERVER_CORE,
    core_busy_s,
    cpu_seconds,
    free_port,
    machine,
    package_versions,
    place_call,
    rss_mb,
    stop_process,
    wait_for_http,
    wait_for_quiet_machine,
)
from loadgen import FakeCaller, LoadGenerator, LoopLag, Samples, Scenario, now_ns, process_cpu_s  # noqa: E402
from voice_procs import VoiceBenchStack  # noqa: E402

MINUTE_NS = 60_000_000_000


class SoakSamples(Samples):
    """Samples kept in compact arrays, also bucketed by minute of the wave (for p99 over time)."""

    def add(self, kind: str, sent_ns: int, received_ns: int) -> None:
        if self.window_start_ns <= sent_ns < self.window_end_ns:
            value = received_ns - sent_ns
            series = self.by_kind.get(kind)
            if series is None:
                series = self.by_kind[kind] = array("q")  # type: ignore[assignment]
            series.append(value)
            key = f"{kind}@{(sent_ns - self.window_start_ns) // MINUTE_NS}"
            bucket = self.by_kind.get(key)
            if bucket is None:
                bucket = self.by_kind[key] = array("q")  # type: ignore[assignment]
            bucket.append(value)


def pct(values: Any, q: float) -> float | None:
    if values is None or len(values) == 0:
        return None
    return round(float(np.percentile(np.frombuffer(values, dtype=np.int64), q * 100, method="higher")) / 1e6, 3)


async def wave(gen: LoadGenerator, stack: VoiceBenchStack, port: int, pid: int, name: str, calls: int,
               seconds: float, ramp_per_s: float, run_id: int) -> dict[str, Any]:
    """Place `calls` calls, each hanging up `seconds` after it connected; return when all have ended."""
    gen.reset(gen.scenario)
    samples = SoakSamples()
    gen.samples = samples
    loop = asyncio.get_running_loop()
    lag = LoopLag(samples)
    hangups: list[asyncio.TimerHandle] = []

    def hang_up(caller: FakeCaller) -> None:
        caller.hangup_ns = now_ns()  # type: ignore[attr-defined]
        caller.hang_up()

    def quiesce(caller: FakeCaller) -> None:
        if caller.session is not None:
            caller.session.quiesce()

    samples.window_start_ns = now_ns()
    samples.window_end_ns = 1 << 63
    cores0, self0, server0, wall0 = core_busy_s(), process_cpu_s(), cpu_seconds(pid), time.perf_counter()
    helpers = [p.pid for p in (stack.ai_process, stack.app_process) if p is not None]
    helpers0 = sum(cpu_seconds(p) for p in helpers)
    rss_trace: list[tuple[float, float, int]] = []
    started = loop.time()
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)) as http:
        async def one(index: int) -> None:
            await asyncio.sleep(max(0.0, started + index / ramp_per_s - loop.time()))
            try:
                caller = await place_call(gen, http, "voice", port, index, run_id, preopen=index % 2 == 0)
            except (httpx.HTTPError, OSError, TimeoutError, RuntimeError) as exc:
                samples.count("calls_failed_setup")
                samples.count(f"setup_error:{type(exc).__name__}")
                return
            hangups.append(loop.call_later(max(0.0, seconds - 1.0), quiesce, caller))
            hangups.append(loop.call_later(seconds, hang_up, caller))

        async with asyncio.timeout(30 + calls / ramp_per_s), asyncio.TaskGroup() as tasks:
            for index in range(calls):
                tasks.create_task(one(index), name=f"place-{index}")
    # Wait (bounded) for every call to end, sampling the server's RSS every 5 s.
    deadline = started + calls / ramp_per_s + seconds + 30
    next_sample = loop.time()
    while loop.time() < deadline:
        if loop.time() >= next_sample:
            live = sum(1 for c in gen.callers if not c.closed)
            rss_trace.append((round(loop.time() - started, 1), round(rss_mb(pid), 2), live))
            next_sample += 5.0
        if gen.callers and all(c.closed for c in gen.callers) and len(gen.callers) + samples.counts.get(
                "calls_failed_setup", 0) >= calls:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # stragglers
    samples.window_end_ns = now_ns()
    for handle in hangups:
        handle.cancel()
    lag.stop()
    cores1, self1, server1, wall1 = core_busy_s(), process_cpu_s(), cpu_seconds(pid), time.perf_counter()
    helpers1 = sum(cpu_seconds(p) for p in helpers)
    window_s = wall1 - wall0
    still_open = sum(1 for c in gen.callers if not c.closed)
    for caller in gen.callers:  # bounded: anything still up is hung up now (and reported)
        caller.hang_up()
    row = summarize(gen, samples, name, calls, seconds, window_s)
    row["calls_not_ended_in_time"] = still_open
    row["server_cpu_pct_core"] = round(100 * (server1 - server0) / window_s, 1)
    row["loadgen_cpu_pct"] = round(100 * (self1 - self0) / window_s, 1)
    row["others_cpu_pct_core1"] = round(max(0.0, 100 * ((cores1[SERVER_CORE] - cores0[SERVER_CORE])
                                                        - (server1 - server0)) / window_s), 1)
    row["others_cpu_pct_core0"] = round(max(0.0, 100 * ((cores1[LOAD_CORE] - cores0[LOAD_CORE]) - (self1 - self0)
                                                        - (helpers1 - helpers0)) / window_s), 1)
    row["ai_app_cpu_pct"] = round(100 * (helpers1 - helpers0) / window_s, 1)
    row["rss_trace"] = rss_trace
    row["rss_peak_mb"] = max((r for _, r, _ in rss_trace), default=None)
    return row


def summarize(gen: LoadGenerator, samples: SoakSamples, name: str, calls: int, seconds: float,
              window_s: float) -> dict[str, Any]:
    k = samples.by_kind
    # Lost: still in a registry (sent, never received). "at hang-up": sent in the last 200 ms before it.
    lost_up = lost_up_tail = lost_down = lost_down_tail = 0
    for caller, sent_ns in gen.caller_payloads.values():
        hung = getattr(caller, "hangup_ns", None)
        lost_up += 1
        lost_up_tail += hung is not None and sent_ns >= hung - 200_000_000
    for session, sent_ns in gen.model_payloads.values():
        hung = getattr(session.call, "hangup_ns", None) if session.call is not None else None
        lost_down += 1
        lost_down_tail += hung is not None and sent_ns >= hung - 200_000_000
    minutes = sorted({int(key.split("@")[1]) for key in k if "@" in key})
    per_minute = [
        {"minute": m, "up_p99": pct(k.get(f"up@{m}"), 0.99), "down_p99": pct(k.get(f"down@{m}"), 0.99),
         "loadgen_lag_p99": pct(k.get(f"loadgen_lag@{m}"), 0.99),
         "frames": len(k.get(f"up@{m}", ())) + len(k.get(f"down@{m}", ()))}
        for m in minutes
    ]
    greet = [c.first_media_ns - c.start_sent_ns for c in gen.callers if c.first_media_ns]
    return {
        "wave": name, "calls": calls, "call_s": seconds, "window_s": round(window_s, 1),
        "up_p50": pct(k.get("up"), 0.5), "up_p99": pct(k.get("up"), 0.99), "up_p999": pct(k.get("up"), 0.999),
        "up_max": pct(k.get("up"), 1.0),
        "down_p50": pct(k.get("down"), 0.5), "down_p99": pct(k.get("down"), 0.99),
        "down_p999": pct(k.get("down"), 0.999), "down_max": pct(k.get("down"), 1.0),
        "up_setup_p50": pct(k.get("up_setup"), 0.5), "up_setup_p99": pct(k.get("up_setup"), 0.99),
        "up_setup_max": pct(k.get("up_setup"), 1.0),
        "down_setup_p50": pct(k.get("down_setup"), 0.5), "down_setup_p99": pct(k.get("down_setup"), 0.99),
        "clear_p50": pct(k.get("barge_clear"), 0.5), "clear_p99": pct(k.get("barge_clear"), 0.99),
        "cancel_p50": pct(k.get("barge_cancel"), 0.5), "cancel_p99": pct(k.get("barge_cancel"), 0.99),
        "greeting_p50": pct(array("q", greet), 0.5), "greeting_p99": pct(array("q", greet), 0.99),
        "loadgen_lag_p99": pct(k.get("loadgen_lag"), 0.99), "loadgen_lag_max": pct(k.get("loadgen_lag"), 1.0),
        "barge_ins": len(k.get("barge_clear", ())),
        "cancel_missing": samples.counts.get("cancel_missing", 0),
        "truncates": samples.counts.get("truncates", 0),
        "up_sent": samples.counts.get("up_sent", 0),
        "up_received": len(k.get("up", ())) + len(k.get("up_setup", ())),
        "down_sent": samples.counts.get("down_sent", 0),
        "down_received": len(k.get("down", ())) + len(k.get("down_setup", ())),
        "lost_up": lost_up, "lost_up_at_hangup": lost_up_tail,
        "lost_down": lost_down, "lost_down_at_hangup": lost_down_tail,
        "unknown_media": samples.counts.get("unknown_media", 0),
        "unknown_appends": samples.counts.get("unknown_appends", 0),
        "calls_dropped_by_server": samples.counts.get("calls_dropped_by_server", 0),
        "calls_failed_setup": samples.counts.get("calls_failed_setup", 0),
        "setup_errors": {key: v for key, v in samples.counts.items() if key.startswith("setup_error")},
        "max_lead_ms": round(max((c.max_lead_ms for c in gen.callers), default=0.0), 1),
        "per_minute": per_minute,
    }


def server_call_totals(log_text: str) -> dict[str, Any]:
    """Totals of the voice server's own `call.ended` lines (INFO), by wave order."""
    ended = []
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "call.ended":
                ended.append(record)
    reasons: dict[str, int] = {}
    for r in ended:
        reasons[r.get("end_reason", "?")] = reasons.get(r.get("end_reason", "?"), 0) + 1
    return {
        "calls_ended": len(ended), "end_reasons": reasons,
        "caller_frames": sum(r.get("caller_frames", 0) for r in ended),
        "caller_frames_dropped": sum(r.get("caller_frames_dropped", 0) for r in ended),
        "model_audio_dropped_ms": round(sum(r.get("model_audio_dropped_ms", 0) for r in ended), 1),
        "warnings_or_errors": sum(1 for line in log_text.splitlines() if '"level": "warning"' in line
                                  or '"level": "error"' in line or '"level":"warning"' in line
                                  or '"level":"error"' in line),
    }


async def idle_rss(pid: int, settle_s: float) -> float:
    await asyncio.sleep(settle_s)
    return round(rss_mb(pid), 2)


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    gen = LoadGenerator(Scenario(barge_in_every=3, setup_window_ms=int(args.setup_window_s * 1000)))
    await gen.start_model_server()
    result: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": ".venv/bin/python bench/soak.py " + " ".join(map(shlex.quote, sys.argv[1:]))}
    run_id = int(time.time()) & 0xFFFFFF
    # BENCH_KEEP_LOGS=1 keeps the work folder (the services' logs) and prints where it is.
    keep = bool(os.environ.get("BENCH_KEEP_LOGS"))
    workdir = (contextlib.nullcontext(tempfile.mkdtemp(prefix="switchboard-soak-")) if keep
               else tempfile.TemporaryDirectory(prefix="switchboard-soak-"))
    with workdir as tmp:
        if keep:
            print(f"work folder kept: {tmp}", file=sys.stderr)
        stack = VoiceBenchStack(Path(tmp), gen.model_port)
        process = None
        try:
            await stack.start()
            port = free_port()
            process = stack.start_voice(port, SWITCHBOARD_MAX_CALLS=str(max(200, args.calls * 2)),
                                        SWITCHBOARD_DRAIN_TIMEOUT_S="10", SWITCHBOARD_LOG_LEVEL="INFO")
            stack_pids = [p.pid for p in (stack.ai_process, stack.app_process) if p is not None]
            await wait_for_http(f"http://127.0.0.1:{port}/health-check/ready")
            result["rss_boot_mb"] = await idle_rss(process.pid, 1.0)
            result["others_cpu_before_pct"] = round(await wait_for_quiet_machine([process.pid, *stack_pids]), 1)
            waves = []
            for name, seconds in (("warm-up", args.warmup_s), ("soak", args.seconds), ("check", args.warmup_s)):
                run_id += 1
                print(f"wave {name}: {args.calls} calls x {seconds:g} s", flush=True)
                row = await wave(gen, stack, port, process.pid, name, args.calls, seconds, args.ramp_per_s, run_id)
                row["rss_idle_after_mb"] = await idle_rss(process.pid, args.settle_s)
                waves.append(row)
                print(json.dumps({key: v for key, v in row.items() if key not in ("rss_trace", "per_minute")}),
                      flush=True)
            result["waves"] = waves
            result["server_totals"] = server_call_totals(stack.voice_log(port))
            result["process_alive"] = process.poll() is None
        finally:
            if process is not None:
                stop_process(process)
                result["exit_code"] = process.returncode
            stack.stop()
    await gen.stop_model_server()
    warm, soak, check = result["waves"]
    result["rss_growth_kb_per_call_soak"] = round(1024 * (soak["rss_idle_after_mb"] - warm["rss_idle_after_mb"])
                                                  / args.calls, 2)
    result["rss_growth_kb_per_call_check"] = round(1024 * (check["rss_idle_after_mb"] - soak["rss_idle_after_mb"])
                                                   / args.calls, 2)
    text = json.dumps(result, indent=1)
    out = Path(tempfile.gettempdir()) / "switchboard-soak-result.json"
    out.write_text(text)
    print(f"result written to {out}")
    print(json.dumps({key: v for key, v in result.items() if key != "waves"}, indent=1))
    if args.doc:
        with (REPO / "docs/benchmarks.md").open("a") as doc:
            doc.write(render(result, args))
    return 0


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    warm, soak, check = result["waves"]

    def line(w: dict[str, Any]) -> str:
        return (f"| {w['wave']} | {w['calls']} x {w['call_s']:g} s | {w['up_p50']} / {w['up_p99']} / {w['up_max']} | "
                f"{w['down_p50']} / {w['down_p99']} / {w['down_max']} | {w['clear_p99']} / {w['cancel_p99']} | "
                f"{w['barge_ins']} | {w['lost_up'] + w['lost_down']} of {w['up_sent'] + w['down_sent']} | "
                f"{w['calls_dropped_by_server'] + w['calls_failed_setup']} | {w['rss_peak_mb']} | "
                f"{w['rss_idle_after_mb']} | {w['server_cpu_pct_core']} | {w['others_cpu_pct_core0']}/"
                f"{w['others_cpu_pct_core1']} | {w['loadgen_lag_p99']} |")

    minutes = " · ".join(f"{m['minute']}: {m['up_p99']}/{m['down_p99']} (lag {m['loadgen_lag_p99']})"
                         for m in soak["per_minute"])
    return "\n".join([
        "",
        "## Soak: 100 calls x 5 minutes on one voice server process (issue 4)",
        "",
        f"- Date: {result['date']}; machine: {machine()}; {package_versions()}",
        f"- Command: `{result['command'].strip()}`",
        f"- Voice server `nice -n {NICE} taskset -c {SERVER_CORE}`; AI server, App server and the load generator "
        f"(bench/loadgen.py: fake callers + fake Realtime server, one process, one clock) on core {LOAD_CORE}. "
        "Calls ramped at "
        f"{args.ramp_per_s:g}/s, half through the signed webhook (model pre-opened), half stream only; "
        "each call sends a 20 ms frame every 20 ms, gets 2 s responses streamed at real time, every 3rd "
        "response interrupted 1 s in; each caller hangs up its own D s after connecting.",
        "- Latencies in ms (p50 / p99 / max): up = `media` sent -> `input_audio_buffer.append` received, "
        "down = `response.output_audio.delta` sent -> `media` received, clear/cancel p99 = `speech_started` "
        "sent -> `clear` at the caller / `response.cancel` at the model. Over the whole wave, ramp included, "
        f"except frames sent in each call's first {args.setup_window_s:g} s (caller audio waits while the model "
        "session opens), reported apart as set-up.",
        "",
        "| wave | calls | up p50/p99/max | down p50/p99/max | clear/cancel p99 | barge-ins | frames lost | "
        "calls dropped | RSS peak MB | RSS idle after MB | server CPU % core | others' CPU % core0/core1 | "
        "loadgen lag p99 |",
        "|" + "---|" * 13,
        line(warm), line(soak), line(check),
        "",
        f"- RSS idle: at boot {result['rss_boot_mb']} MB, after warm-up {warm['rss_idle_after_mb']} MB, after the "
        f"soak {soak['rss_idle_after_mb']} MB, after the check wave {check['rss_idle_after_mb']} MB: "
        f"{result['rss_growth_kb_per_call_soak']} KB per completed call over the soak, "
        f"{result['rss_growth_kb_per_call_check']} KB per call over the check wave.",
        f"- Set-up frames (first {args.setup_window_s:g} s of each call), soak wave: up p50/p99/max "
        f"{soak['up_setup_p50']} / {soak['up_setup_p99']} / {soak['up_setup_max']} ms, down p50/p99 "
        f"{soak['down_setup_p50']} / {soak['down_setup_p99']} ms; greeting (`start` -> first `media`) p50/p99 "
        f"{soak['greeting_p50']} / {soak['greeting_p99']} ms.",
        f"- p99 up/down (ms) by minute of the soak, with the load generator's own loop lag p99: {minutes}.",
        f"- Server RSS during the soak (s into the wave: MB, live calls): "
        f"{', '.join(f'{t:g}: {r} ({n})' for t, r, n in soak['rss_trace'][::6])}.",
        f"- Server's own totals (`call.ended`, all waves): {json.dumps(result['server_totals'])}.",
        f"- Voice server still alive at the end: {result.get('process_alive')}; exit code after SIGTERM: "
        f"{result.get('exit_code')}.",
        "",
    ])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each soak call")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="length of each warm-up / check call")
    parser.add_argument("--ramp-per-s", type=float, default=20.0)
    parser.add_argument("--settle-s", type=float, default=5.0, help="idle time before reading RSS after a wave")
    parser.add_argument("--setup-window-s", type=float, default=3.0,
                        help="frames in a call's first seconds are reported apart (model session opening)")
    parser.add_argument("--doc", action="store_true", help="append a section to docs/benchmarks.md")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))

"""Drain bench (issue 4): SIGTERM with N live calls; every call must finish normally, then the process exits 0.

Starts the AI and App servers and one voice server process (`switchboard serve voice`,
`nice -n -20 taskset -c 1`, SWITCHBOARD_DRAIN_TIMEOUT_S=60 so the drain timeout never cuts a call),
places N calls with the load generator of bench/loadgen.py (fake callers + fake Realtime server in this
process: a 20 ms frame each way every 20 ms, 2 s responses, every 3rd interrupted), lets them run, then
sends SIGTERM and checks, with one clock:

- `/health-check/ready` turns 503 (polled every 5 ms from the signal);
- a signed webhook and a signed stream upgrade are refused with 503, right after the signal and again
  half-way through the drain;
- every live call goes on: callers hang up at staggered times --first-s..--last-s after the signal, media
  flows both ways until then (model audio stops 0.3 s before each hang-up so nothing is in flight), no frame
  is lost, no call is closed by the server;
- the process exits 0 after the last call ends.

    .venv/bin/python bench/drain.py [--calls 50] [--doc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
import websockets
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_latency import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    LOAD_CORE,
    NICE,
    REPO,
    TENANT_NUMBER,
    core_busy_s,
    cpu_seconds,
    free_port,
    machine,
    place_call,
    stop_process,
    wait_for_http,
    wait_for_quiet_machine,
)
from loadgen import FakeCaller, LoadGenerator, Scenario, now_ns, process_cpu_s  # noqa: E402
from soak import server_call_totals  # noqa: E402
from voice_procs import VoiceBenchStack  # noqa: E402


def ms(ns: int) -> float:
    return round(ns / 1e6, 1)


async def refused_statuses(http: httpx.AsyncClient, port: int, index: int) -> dict[str, Any]:
    """A new signed webhook and a new signed stream upgrade, as Twilio would send them."""
    base = f"http://127.0.0.1:{port}"
    validator = RequestValidator(AUTH_TOKEN)
    form = {"CallSid": f"CA{'d' * 24}{index:08x}", "AccountSid": ACCOUNT_SID, "From": "+15557000999",
            "To": TENANT_NUMBER, "Direction": "inbound", "CallStatus": "ringing"}
    signature = validator.compute_signature(base + "/twilio-voice-webhook", form)
    t0 = now_ns()
    webhook = await http.post(base + "/twilio-voice-webhook", data=form, headers={"X-Twilio-Signature": signature})
    webhook_ms = ms(now_ns() - t0)
    stream_url = f"ws://127.0.0.1:{port}/twilio-stream"
    upgrade_status: int | str
    t0 = now_ns()
    try:
        async with websockets.connect(stream_url, open_timeout=5,
                                      additional_headers={"X-Twilio-Signature": validator.compute_signature(
                                          stream_url, {})}):
            upgrade_status = 101
    except websockets.InvalidStatus as exc:
        upgrade_status = exc.response.status_code
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        upgrade_status = type(exc).__name__
    return {"webhook_status": webhook.status_code, "webhook_ms": webhook_ms,
            "webhook_retry_after": webhook.headers.get("retry-after"),
            "upgrade_status": upgrade_status, "upgrade_ms": ms(now_ns() - t0)}


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    gen = LoadGenerator(Scenario(barge_in_every=3))
    await gen.start_model_server()
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": ".venv/bin/python bench/drain.py " + " ".join(map(shlex.quote, sys.argv[1:]))}
    with tempfile.TemporaryDirectory(prefix="switchboard-drain-") as tmp:
        stack = VoiceBenchStack(Path(tmp), gen.model_port)
        process = None
        try:
            await stack.start()
            port = free_port()
            process = stack.start_voice(port, SWITCHBOARD_DRAIN_TIMEOUT_S=str(args.drain_timeout_s),
                                        SWITCHBOARD_LOG_LEVEL="INFO")
            base = f"http://127.0.0.1:{port}"
            await wait_for_http(base + "/health-check/ready")
            helpers = [p.pid for p in (stack.ai_process, stack.app_process) if p is not None]
            result["others_cpu_before_pct"] = round(await wait_for_quiet_machine([process.pid, *helpers]), 1)
            run_id = int(time.time()) & 0xFFFFFF
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=httpx.Limits(max_connections=64)) as http:
                started = loop.time()

                async def one(index: int) -> None:
                    await asyncio.sleep(max(0.0, started + index / args.ramp_per_s - loop.time()))
                    try:
                        await place_call(gen, http, "voice", port, index, run_id, preopen=index % 2 == 0)
                    except (httpx.HTTPError, OSError, TimeoutError, RuntimeError) as exc:
                        gen.samples.count(f"setup_error:{type(exc).__name__}")

                async with asyncio.timeout(30 + args.calls / args.ramp_per_s), asyncio.TaskGroup() as tasks:
                    for index in range(args.calls):
                        tasks.create_task(one(index), name=f"place-{index}")
                await asyncio.sleep(args.before_s)
                callers = list(gen.callers)
                result["calls_live_at_sigterm"] = sum(1 for c in callers if not c.closed)
                result["ready_before"] = (await http.get(base + "/health-check/ready")).status_code
                cores0, self0, server0, wall0 = core_busy_s(), process_cpu_s(), cpu_seconds(process.pid), time.perf_counter()
                helpers0 = sum(cpu_seconds(p) for p in helpers)
                # Count every frame from here on (the window opens at the signal).
                gen.samples.window_start_ns = sigterm_ns = now_ns()
                process.send_signal(signal.SIGTERM)
                polls = 0
                ready_503_ns = None
                async with asyncio.timeout(5):
                    while True:
                        polls += 1
                        status = (await http.get(base + "/health-check/ready")).status_code
                        if status == 503:
                            ready_503_ns = now_ns()
                            break
                        await asyncio.sleep(0.005)
                result["sigterm_to_ready_503_ms"] = ms(ready_503_ns - sigterm_ns)
                result["ready_polls_until_503"] = polls
                result["refused_right_after"] = await refused_statuses(http, port, 1)
                result["refused_right_after"]["at_ms"] = ms(now_ns() - sigterm_ns)

                # Staggered hang-ups: caller i at first_s + (last_s - first_s) * i / (n - 1) after the signal.
                handles: list[asyncio.TimerHandle] = []
                hangup_at: dict[int, float] = {}
                signal_at = loop.time() - (now_ns() - sigterm_ns) / 1e9

                def quiesce(caller: FakeCaller) -> None:
                    if caller.session is not None:
                        caller.session.quiesce()

                def hang_up(caller: FakeCaller) -> None:
                    caller.hangup_ns = now_ns()  # type: ignore[attr-defined]
                    caller.hang_up()

                n = max(1, len(callers) - 1)
                for i, caller in enumerate(callers):
                    at = signal_at + args.first_s + (args.last_s - args.first_s) * i / n
                    hangup_at[i] = at - signal_at
                    handles.append(loop.call_at(at - 0.3, quiesce, caller))
                    handles.append(loop.call_at(at, hang_up, caller))
                await asyncio.sleep(max(0.0, signal_at + (args.first_s + args.last_s) / 2 - loop.time()))
                result["refused_mid_drain"] = await refused_statuses(http, port, 2)
                result["refused_mid_drain"]["at_ms"] = ms(now_ns() - sigterm_ns)
                result["ready_mid_drain"] = (await http.get(base + "/health-check/ready")).status_code
                result["live_mid_drain"] = (await http.get(base + "/health-check/live")).status_code
                # Wait (bounded) for the last hang-up and for the process to exit.
                exit_deadline = signal_at + args.last_s + args.exit_wait_s
                server_last = server0
                polls_since_cpu = 0
                while process.poll() is None and loop.time() < exit_deadline:
                    polls_since_cpu += 1
                    if polls_since_cpu >= 20:  # the server's CPU time, read while it still exists
                        polls_since_cpu = 0
                        with contextlib.suppress(OSError, IndexError, ValueError):
                            server_last = cpu_seconds(process.pid)
                    await asyncio.sleep(0.005)
                exited_ns = now_ns() if process.poll() is not None else None
                for handle in handles:
                    handle.cancel()
            wall1 = time.perf_counter()
            result["server_cpu_pct_core_until_exit"] = round(100 * (server_last - server0) / (wall1 - wall0), 1)
            cores1, self1 = core_busy_s(), process_cpu_s()
            helpers1 = sum(cpu_seconds(p) for p in helpers)
            own = (self1 - self0) + (helpers1 - helpers0) + (server_last - server0)
            result["others_cpu_pct_both_cores"] = round(
                100 * (sum(cores1.values()) - sum(cores0.values()) - own) / (wall1 - wall0), 1)
            result["exit_code"] = process.returncode
            last_hangup_ns = max((getattr(c, "hangup_ns", 0) for c in callers), default=0)
            result["last_hangup_to_exit_ms"] = ms(exited_ns - last_hangup_ns) if exited_ns and last_hangup_ns else None
            result["sigterm_to_exit_s"] = round((exited_ns - sigterm_ns) / 1e9, 2) if exited_ns else None
            result["hangups_after_sigterm_s"] = [round(min(hangup_at.values()), 1), round(max(hangup_at.values()), 1)]
            result.update(per_call_checks(gen, callers, sigterm_ns))
            result["server_totals"] = server_call_totals(stack.voice_log(port))
            result["drain_log"] = [line for line in stack.voice_log(port).splitlines() if '"drain.' in line]
        finally:
            if process is not None and process.poll() is None:
                result["killed_after_timeout"] = True
                stop_process(process)
            stack.stop()
    await gen.stop_model_server()
    print(json.dumps(result, indent=1))
    ok = (result.get("exit_code") == 0 and result["lost_frames"] == 0 and result["calls_closed_by_server"] == 0
          and result["calls_ended_normally"] == args.calls and result["refused_right_after"]["webhook_status"] == 503
          and result["refused_right_after"]["upgrade_status"] == 503)
    result["passed"] = ok
    print("PASSED" if ok else "FAILED")
    if args.doc:
        with (REPO / "docs/benchmarks.md").open("a") as doc:
            doc.write(render(result, args))
    return 0 if ok else 1


def per_call_checks(gen: LoadGenerator, callers: list[FakeCaller], sigterm_ns: int) -> dict[str, Any]:
    samples = gen.samples
    up, down = samples.by_kind.get("up", []), samples.by_kind.get("down", [])
    lost = len(gen.caller_payloads) + len(gen.model_payloads)
    # Media both ways until the end: the last model audio each caller got, and its own last frame
    # that reached the model, measured back from its hang-up.
    last_down_gap = []
    last_up_gap = []
    for caller in callers:
        hung = getattr(caller, "hangup_ns", None)
        if hung is None:
            continue
        if caller.last_media_ns:  # type: ignore[attr-defined]
            last_down_gap.append((hung - caller.last_media_ns) / 1e6)  # type: ignore[attr-defined]
        session = caller.session
        if session is not None and session.last_append_ns:  # type: ignore[attr-defined]
            last_up_gap.append((hung - session.last_append_ns) / 1e6)  # type: ignore[attr-defined]
    ended_normally = sum(1 for c in callers if c.hung_up and c.closed)
    return {
        "calls_ended_normally": ended_normally,
        "calls_closed_by_server": samples.counts.get("calls_dropped_by_server", 0),
        "setup_errors": {k: v for k, v in samples.counts.items() if k.startswith("setup_error")},
        "frames_after_sigterm": {"up_sent": samples.counts.get("up_sent", 0), "up_received": len(up),
                                 "down_sent": samples.counts.get("down_sent", 0), "down_received": len(down)},
        "lost_frames": lost,
        "barge_ins_after_sigterm": len(samples.by_kind.get("barge_clear", [])),
        "up_p99_ms_after_sigterm": _p(up, 0.99), "down_p99_ms_after_sigterm": _p(down, 0.99),
        "last_model_audio_before_hangup_ms": _spread(last_down_gap),
        "last_caller_frame_at_model_before_hangup_ms": _spread(last_up_gap),
    }


def _p(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 2)


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"calls": 0}
    ordered = sorted(values)
    return {"calls": len(ordered), "min": round(ordered[0], 1), "median": round(ordered[len(ordered) // 2], 1),
            "max": round(ordered[-1], 1)}


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    r1, r2 = result["refused_right_after"], result["refused_mid_drain"]
    return "\n".join([
        "",
        f"## Drain: SIGTERM with {args.calls} live calls (issue 4)",
        "",
        f"- Date: {result['date']}; machine: {machine()}",
        f"- Command: `{result['command'].strip()}`",
        "- One voice server process (`nice -n -20 taskset -c 1`, SWITCHBOARD_DRAIN_TIMEOUT_S="
        f"{args.drain_timeout_s:g}), AI and App servers and the load generator (fake callers + fake Realtime "
        "server, bench/loadgen.py) on core 0. Calls ramped, then run "
        f"{args.before_s:g} s (20 ms frames each way, 2 s responses, every 3rd interrupted) before SIGTERM; callers "
        f"hang up {args.first_s:g}-{args.last_s:g} s after the signal, evenly staggered; model audio stops 0.3 s "
        "before each hang-up so nothing is in flight.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| calls live at SIGTERM | {result['calls_live_at_sigterm']} |",
        f"| SIGTERM -> `/health-check/ready` 503 | {result['sigterm_to_ready_503_ms']} ms "
        f"({result['ready_polls_until_503']} poll(s), every 5 ms) |",
        f"| new webhook / stream upgrade right after ({r1['at_ms']} ms) | {r1['webhook_status']} "
        f"(Retry-After {r1['webhook_retry_after']}) / {r1['upgrade_status']} |",
        f"| new webhook / stream upgrade mid-drain ({r2['at_ms']} ms) | {r2['webhook_status']} / "
        f"{r2['upgrade_status']}; ready {result['ready_mid_drain']}, live {result['live_mid_drain']} |",
        f"| calls ended by their caller's `stop` | {result['calls_ended_normally']} of {args.calls}; closed by the "
        f"server: {result['calls_closed_by_server']} |",
        f"| frames after SIGTERM (up sent/received, down sent/received) | "
        f"{result['frames_after_sigterm']['up_sent']}/{result['frames_after_sigterm']['up_received']}, "
        f"{result['frames_after_sigterm']['down_sent']}/{result['frames_after_sigterm']['down_received']}; "
        f"lost {result['lost_frames']} |",
        f"| p99 up / down after SIGTERM | {result['up_p99_ms_after_sigterm']} / "
        f"{result['down_p99_ms_after_sigterm']} ms; barge-ins after SIGTERM {result['barge_ins_after_sigterm']} |",
        f"| last model audio at each caller, before its hang-up (min/median/max) | "
        f"{_fmt_spread(result['last_model_audio_before_hangup_ms'])} ms |",
        f"| last caller frame at the model, before the hang-up (min/median/max) | "
        f"{_fmt_spread(result['last_caller_frame_at_model_before_hangup_ms'])} ms |",
        f"| last hang-up -> process exit | {result['last_hangup_to_exit_ms']} ms; SIGTERM -> exit "
        f"{result['sigterm_to_exit_s']} s; exit code {result['exit_code']} |",
        f"| voice server CPU from SIGTERM to exit | {result['server_cpu_pct_core_until_exit']} % of a core; "
        f"others' CPU before the run {result['others_cpu_before_pct']} % |",
        f"| server's `call.ended` | {json.dumps(result['server_totals']['end_reasons'])}, caller frames dropped "
        f"{result['server_totals']['caller_frames_dropped']}, warnings/errors logged "
        f"{result['server_totals']['warnings_or_errors']} |",
        "",
        f"Result: {'PASSED' if result['passed'] else 'FAILED'}.",
        "",
    ])


def _fmt_spread(s: dict[str, Any]) -> str:
    return f"{s.get('min')} / {s.get('median')} / {s.get('max')} ({s.get('calls')} calls)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--ramp-per-s", type=float, default=25.0)
    parser.add_argument("--before-s", type=float, default=5.0, help="calls run this long before SIGTERM")
    parser.add_argument("--first-s", type=float, default=10.0, help="first hang-up, seconds after SIGTERM")
    parser.add_argument("--last-s", type=float, default=20.0, help="last hang-up, seconds after SIGTERM")
    parser.add_argument("--drain-timeout-s", type=float, default=60.0)
    parser.add_argument("--exit-wait-s", type=float, default=20.0, help="bound on waiting for the exit")
    parser.add_argument("--doc", action="store_true", help="append a section to docs/benchmarks.md")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))

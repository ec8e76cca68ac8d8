"""Engine capacity bench (issue 5): how many concurrent demo calls one local engine serves within 1 s turns.

One engine process (`switchboard serve engine`, its own process, not pinned: it runs one model worker
thread plus Whisper's CPU threads, as `make demo` runs it). This process is C fake callers speaking
straight to the engine's Realtime WebSocket, as bench/engine_latency.py does: each sends a μ-law
frame every 20 ms for the whole call (silence between its questions), speaks a hibari-synthesized
question (synthesized here before the run), answers the engine's `get_knowledge` call at once with a
canned passage, "plays" the spoken answer at real time, then asks the next one 0.5 s after it ended.
Callers start 1.7 s apart so their turns do not line up by construction.

Two turn latencies, both ending at the first `response.output_audio.delta` of the turn:
- from speech end: the last 20 ms frame of the question with speech energy (RMS > 300) was sent
  (what the caller waits; includes the VAD's 500 ms `silence_duration_ms`);
- from `speech_stopped`: the engine's `input_audio_buffer.speech_stopped` reached the caller
  (bench/engine_latency.py's definition).

    .venv/bin/python bench/engine_capacity.py [--levels 1,2,3,4] [--turns-single 20] [--turns 6] [--doc]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import math
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_latency import KB_TEXT, QUESTIONS  # noqa: E402

from switchboard.audio.g711 import mulaw_to_pcm16  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FRAME = 160
SILENCE = b"\xff" * FRAME
SPEECH_RMS = 300.0
SESSION = {
    "type": "realtime", "instructions": "Acme Outdoor",
    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {
        "type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 300, "silence_duration_ms": 500}},
        "output": {"format": {"type": "audio/pcmu"}}},
    "tools": [{"type": "function", "name": "get_knowledge", "description": "Search the knowledge base",
               "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}],
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Question:
    text: str
    mulaw: bytes
    speech_end_frame: int  # index of the last 20 ms frame with speech energy


@dataclass
class Turn:
    caller: int
    question: str
    from_speech_end_ms: float | None = None
    from_speech_stopped_ms: float | None = None
    answer_audio_ms: float = 0.0
    tool_calls: int = 0
    error: str | None = None


@dataclass
class Caller:
    index: int
    connection: ClientConnection
    queue: list[bytes] = field(default_factory=list)  # frames waiting to be sent
    frame_sent_at: dict[int, float] = field(default_factory=dict)  # frame number -> perf_counter when sent
    frames_sent: int = 0


def frame_rms(frame: bytes) -> float:
    pcm = mulaw_to_pcm16(frame)
    count = len(pcm) // 2
    total = sum(int.from_bytes(pcm[i:i + 2], "little", signed=True) ** 2 for i in range(0, len(pcm), 2))
    return math.sqrt(total / max(1, count))


def prepare_questions(count: int) -> list[Question]:
    from switchboard.engine.speech import Synthesizer

    synthesizer = Synthesizer()
    questions = []
    for text in QUESTIONS[:count]:
        audio = synthesizer.synthesize_mulaw(text)
        audio = audio[: len(audio) - len(audio) % FRAME]
        frames = [audio[i:i + FRAME] for i in range(0, len(audio), FRAME)]
        last = max((i for i, f in enumerate(frames) if frame_rms(f) > SPEECH_RMS), default=len(frames) - 1)
        questions.append(Question(text, audio, last))
    return questions


async def pace(caller: Caller, stop: asyncio.Event) -> None:
    """A frame every 20 ms for the whole call: queued speech, else silence (as Twilio sends)."""
    started = time.perf_counter()
    while not stop.is_set():
        frame = caller.queue.pop(0) if caller.queue else SILENCE
        caller.frames_sent += 1
        caller.frame_sent_at[caller.frames_sent] = time.perf_counter()
        await caller.connection.send(json.dumps({"type": "input_audio_buffer.append",
                                                 "audio": base64.b64encode(frame).decode()}))
        await asyncio.sleep(max(0.0, started + caller.frames_sent * 0.020 - time.perf_counter()))


async def run_caller(index: int, url: str, questions: list[Question], turns: int, start_delay_s: float,
                     results: list[Turn], timeout_s: float) -> None:
    await asyncio.sleep(start_delay_s)
    async with connect(url, max_size=None, open_timeout=10) as connection:
        await asyncio.wait_for(connection.recv(), 10)  # session.created
        await connection.send(json.dumps({"type": "session.update", "session": SESSION}))
        caller = Caller(index, connection)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            pacer = tasks.create_task(pace(caller, stop), name=f"caller-{index}-pace")
            try:
                for n in range(turns):
                    question = questions[(index * 7 + n) % len(questions)]
                    turn = Turn(index, question.text)
                    results.append(turn)
                    try:
                        async with asyncio.timeout(timeout_s):
                            await one_turn(caller, question, turn)
                    except TimeoutError:
                        turn.error = "timeout"
                    await asyncio.sleep(0.5)
            finally:
                stop.set()
                await pacer


async def one_turn(caller: Caller, question: Question, turn: Turn) -> None:
    connection = caller.connection
    first_frame = caller.frames_sent + len(caller.queue) + 1
    caller.queue.extend(question.mulaw[i:i + FRAME] for i in range(0, len(question.mulaw), FRAME))
    speech_end_frame = first_frame + question.speech_end_frame
    stopped_at: float | None = None
    first_audio_at: float | None = None
    audio_bytes = 0
    while True:
        event = json.loads(await connection.recv())
        kind = event["type"]
        if kind == "input_audio_buffer.speech_stopped" and stopped_at is None:
            stopped_at = time.perf_counter()
        elif kind == "response.output_audio.delta" and stopped_at is not None:
            if first_audio_at is None:
                first_audio_at = time.perf_counter()
            audio_bytes += len(base64.b64decode(event["delta"]))
        elif kind == "response.done":
            output = event["response"].get("output") or []
            calls = [o for o in output if o.get("type") == "function_call"]
            if calls:
                turn.tool_calls += 1
                for call in calls:
                    await connection.send(json.dumps({"type": "conversation.item.create", "item": {
                        "type": "function_call_output", "call_id": call["call_id"],
                        "output": json.dumps({"results": [{"title": "Store", "text": KB_TEXT, "source": "kb",
                                                           "score": 0.5}]})}}))
                await connection.send(json.dumps({"type": "response.create"}))
            elif first_audio_at is not None:
                break
    assert stopped_at is not None and first_audio_at is not None
    end_sent = caller.frame_sent_at.get(speech_end_frame)
    if end_sent is not None:
        turn.from_speech_end_ms = (first_audio_at - (end_sent + 0.020)) * 1000
    turn.from_speech_stopped_ms = (first_audio_at - stopped_at) * 1000
    turn.answer_audio_ms = audio_bytes / 8
    # The caller listens to the whole answer (streamed faster than real time) before its next question.
    await asyncio.sleep(max(0.0, first_audio_at + audio_bytes / 8000 - time.perf_counter()))


def summarize(level: int, turns: list[Turn], wall_s: float, engine_cpu_s: float, others_cpu_pct: float,
              rss_mb: float) -> dict[str, Any]:
    ok = [t for t in turns if t.error is None and t.from_speech_end_ms is not None]

    def stats(values: list[float]) -> dict[str, Any]:
        if not values:
            return {}
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return {"p50": round(statistics.median(ordered)), "p95": round(p95), "max": round(ordered[-1])}

    return {
        "concurrent_calls": level, "turns": len(ok), "failed_turns": len(turns) - len(ok),
        "errors": sorted({t.error for t in turns if t.error}),
        "from_speech_end_ms": stats([t.from_speech_end_ms for t in ok if t.from_speech_end_ms is not None]),
        "from_speech_stopped_ms": stats([t.from_speech_stopped_ms for t in ok if t.from_speech_stopped_ms is not None]),
        "all_from_speech_end_ms": [round(t.from_speech_end_ms) for t in ok if t.from_speech_end_ms is not None],
        "tool_calls": sum(t.tool_calls for t in ok),
        "answer_audio_ms_median": round(statistics.median([t.answer_audio_ms for t in ok])) if ok else None,
        "engine_cpu_pct_of_one_core": round(100 * engine_cpu_s / wall_s, 1),
        "others_cpu_pct_of_one_core": round(others_cpu_pct, 1),
        "engine_rss_mb": round(rss_mb),
        "wall_s": round(wall_s, 1),
    }


def proc_cpu_s(pid: int) -> float:
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def all_busy_s() -> float:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_level(url: str, pid: int, questions: list[Question], level: int, turns: int,
                    timeout_s: float) -> dict[str, Any]:
    results: list[Turn] = []
    busy0, engine0, self0, wall0 = all_busy_s(), proc_cpu_s(pid), self_cpu_s(), time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for index in range(level):
            tasks.create_task(run_caller(index, url, questions, turns, index * 1.7, results, timeout_s),
                              name=f"caller-{index}")
    busy1, engine1, self1, wall1 = all_busy_s(), proc_cpu_s(pid), self_cpu_s(), time.perf_counter()
    wall = wall1 - wall0
    others = 100 * ((busy1 - busy0) - (engine1 - engine0) - (self1 - self0)) / wall
    row = summarize(level, results, wall, engine1 - engine0, max(0.0, others), rss(pid))
    row["bench_process_cpu_pct"] = round(100 * (self1 - self0) / wall, 1)
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_live(port: int, process: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout_s):
        while True:
            if process.poll() is not None:
                raise RuntimeError("engine exited during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/health-check/live", timeout=1.0)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    print("synthesizing the questions...", flush=True)
    questions = prepare_questions(20)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SWITCHBOARD_"))}
    env["SWITCHBOARD_LOG_LEVEL"] = "WARNING"
    with tempfile.TemporaryDirectory(prefix="switchboard-engine-cap-") as tmp:
        log = open(Path(tmp) / "engine.log", "wb")  # noqa: SIM115, ASYNC230
        started = time.perf_counter()
        process = subprocess.Popen([str(REPO / ".venv/bin/switchboard"), "serve", "engine", "--host", "127.0.0.1",  # noqa: ASYNC220 - start-up only
                                    "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
        rows = []
        try:
            await wait_live(port, process)
            load_s = time.perf_counter() - started
            rss_idle = rss(process.pid)
            url = f"ws://127.0.0.1:{port}/v1/realtime"
            for level in levels:
                turns = args.turns_single if level == 1 else args.turns
                print(f"{level} concurrent call(s), {turns} turns each...", flush=True)
                row = await run_level(url, process.pid, questions, level, turns, args.turn_timeout_s)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python bench/engine_capacity.py " + " ".join(map(shlex.quote, sys.argv[1:])),
        "engine_start_to_live_s": round(load_s, 1), "engine_rss_idle_mb": round(rss_idle),
        "levels": rows,
    }
    result["max_calls_p95_from_speech_end_within_1s"] = largest_passing(rows, "from_speech_end_ms")
    result["max_calls_p95_from_speech_stopped_within_1s"] = largest_passing(rows, "from_speech_stopped_ms")
    print(json.dumps(result, indent=1))
    if args.doc:
        with (REPO / "docs/benchmarks.md").open("a") as doc:
            doc.write(render(result))
    return 0


def largest_passing(rows: list[dict[str, Any]], key: str) -> int:
    """The largest level whose p95 is <= 1 s with no failed turn, every smaller level passing too."""
    passed = 0
    for row in sorted(rows, key=lambda r: r["concurrent_calls"]):
        if not row[key] or row[key]["p95"] > 1000 or row["failed_turns"]:
            break
        passed = row["concurrent_calls"]
    return passed


def render(result: dict[str, Any]) -> str:
    lines = [
        "",
        "## Engine capacity: concurrent demo calls on one local engine (issue 5)",
        "",
        f"- Date: {result['date']}; Command: `{result['command'].strip()}`",
        "- One `switchboard serve engine` process (not pinned; one model worker thread, Whisper on 2 CPU threads), "
        "callers in this process speaking straight to its Realtime WebSocket: continuous 20 ms μ-law frames, "
        "hibari-synthesized questions (bench/engine_latency.py's 20), `get_knowledge` answered at once, each "
        "answer listened to at real time, next question 0.5 s later; callers start 1.7 s apart. "
        f"Engine start -> live {result['engine_start_to_live_s']} s, idle RSS {result['engine_rss_idle_mb']} MB.",
        "- Turn latency ends at the first `response.output_audio.delta`. From speech end = the last question frame "
        "with speech energy was sent (includes server VAD's 500 ms `silence_duration_ms`); from speech_stopped = "
        "the engine's `speech_stopped` arrived (bench/engine_latency.py's definition).",
        "",
        "| concurrent calls | turns | from speech end p50 / p95 / max (ms) | from speech_stopped p50 / p95 / max (ms) "
        "| failed | engine CPU % of a core | others' CPU % of a core | engine RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["levels"]:
        a, b = r["from_speech_end_ms"], r["from_speech_stopped_ms"]
        lines.append(f"| {r['concurrent_calls']} | {r['turns']} | {a.get('p50')} / {a.get('p95')} / {a.get('max')} | "
                     f"{b.get('p50')} / {b.get('p95')} / {b.get('max')} | {r['failed_turns']} | "
                     f"{r['engine_cpu_pct_of_one_core']} | {r['others_cpu_pct_of_one_core']} | {r['engine_rss_mb']} |")
    lines += [
        "",
        f"Concurrent calls with turn-latency p95 <= 1 s: {result['max_calls_p95_from_speech_end_within_1s']} measured "
        f"from speech end, {result['max_calls_p95_from_speech_stopped_within_1s']} from `speech_stopped` "
        "(the largest level run with every level up to it passing).",
        "",
        "Per-turn latencies from speech end (ms), by level: "
        + "; ".join(f"{r['concurrent_calls']}: {r['all_from_speech_end_ms']}" for r in result["levels"]),
        "",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,3,4")
    parser.add_argument("--turns-single", type=int, default=20, help="turns for the single-call level")
    parser.add_argument("--turns", type=int, default=6, help="turns per caller for the concurrent levels")
    parser.add_argument("--turn-timeout-s", type=float, default=30.0)
    parser.add_argument("--doc", action="store_true", help="append a section to docs/benchmarks.md")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

"""Barge-in accuracy bench: how close `conversation.item.truncate` lands to what the caller heard, under load.

Runs the AI and App servers (core 0, with this load generator) and `switchboard serve voice` (core 1), as
bridge_latency.py does, with the default mark interval (100 ms) and pacing (300 ms lead). N callers play the
agent's audio at real time, continuously while any is queued, and echo each mark the moment its audio has
played (a timer per mark, not a frame grid), as Twilio does; a `clear` stops playback and echoes the pending
marks at once. The fake model generates every answer in a burst (RESPONSE_MS of 20 ms deltas with unique
payloads, then its transcript of WORDS words); the caller barges in at a random point of each answer. Every
other answer is still "in progress" at the barge-in (the bridge cancels it), the others are done.

Reported per call count: |audio_end_ms - heard| (heard = what the caller had played of that item when the
`clear` arrived) p50/p99/max, items heard but deleted, and the App server's record of each interrupted answer:
recorded-words fraction minus heard fraction.

    .venv/bin/python bench/barge_in_accuracy.py [--calls 50,150] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server
from twilio.request_validator import RequestValidator

from switchboard.bridge.stream_urls import issue_stream_url
from switchboard.url_tokens import derive_url_token_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_latency import (  # noqa: E402
    AUTH_TOKEN,
    LOAD_CORE,
    NICE,
    SERVICE_TOKEN,
    Stack,
    cpu_seconds,
    free_port,
    stop_process,
    wait_for_http,
)
from loadgen import LoopLag, Samples, now_ns, unique_payload  # noqa: E402

RESPONSE_MS = 4000
WORDS = 48
TRANSCRIPT = " ".join(f"w{i}" for i in range(WORDS))
FRAME_MS = 20
SPEECH_S = 1.2  # the caller talks this long after barging in
THINK_S = 0.4  # then the model answers after this long
SILENT_FRAME = base64.b64encode(b"\xff" * 160).decode()


class Results:
    def __init__(self) -> None:
        self.heard: dict[str, float] = {}  # item id -> ms the caller had played of it at the clear
        self.behind_ms: dict[str, float] = {}  # item id -> how far behind its timers this process ran then
        self.lag: LoopLag | None = None
        self.window: tuple[float, float] = (float("inf"), float("inf"))  # loop times; clears outside don't count
        self.truncated: dict[str, int] = {}  # item id -> audio_end_ms
        self.deleted: set[str] = set()
        self.item_call: dict[str, str] = {}  # item id -> call sid
        self.payload_item: dict[str, str] = {}
        self.errors: list[str] = []


# --------------------------------------------------------------------------- the model
class Session(WSListener):
    """A Realtime GA session that answers in bursts and barges in at a random point of each answer."""

    count = 0

    def __init__(self, results: Results, rng: random.Random) -> None:
        super().__init__()
        Session.count += 1
        self.index = Session.count
        self.results = results
        self.rng = rng
        self.loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.responses = 0
        self.active: str | None = None
        self.item_id = ""
        self.seq = 0
        self.closed = False

    def _send(self, event: dict[str, Any]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.send(WSMsgType.TEXT, orjson.dumps(event))

    def _later(self, delay_s: float, callback: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay_s, callback)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._later(0.15, lambda: self._send({"type": "session.created", "session": {
            "id": f"sess_{self.index}", "object": "realtime.session", "type": "realtime"}}))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        data = frame.get_payload_as_bytes()
        if data.startswith(b'{"type":"input_audio_buffer.append"'):
            return  # caller audio: nothing to do with it here (and the commonest message by far)
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "session.update":
            self._send({"type": "session.updated", "session": {"id": f"sess_{self.index}", "type": "realtime"}})
        elif kind == "response.create":
            self._respond()
        elif kind == "response.cancel":
            if self.active is not None:
                self._done("cancelled")
            else:
                self._send({"type": "error", "error": {"type": "invalid_request_error",
                                                       "code": "response_cancel_not_active", "message": "-"}})
        elif kind == "conversation.item.truncate":
            self.results.truncated[event["item_id"]] = int(event["audio_end_ms"])
            self._send({"type": "conversation.item.truncated", "item_id": event["item_id"], "content_index": 0,
                        "audio_end_ms": event["audio_end_ms"]})
        elif kind == "conversation.item.delete":
            self.results.deleted.add(event["item_id"])
            self._send({"type": "conversation.item.deleted", "item_id": event["item_id"]})
        elif kind in ("conversation.item.create", "conversation.item.retrieve"):
            self.results.errors.append(f"unexpected {kind}")

    def _respond(self) -> None:
        self.responses += 1
        response_id = f"resp_{self.index}_{self.responses}"
        self.item_id = item_id = f"item_{self.index}_{self.responses}"
        self.active = response_id
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self._send({"type": "response.created", "response": {"id": response_id, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        for _ in range(RESPONSE_MS // FRAME_MS):
            self.seq += 1
            payload = unique_payload(b"M", self.index, self.seq)
            self.results.payload_item[payload] = item_id
            self._send({"type": "response.output_audio.delta", **ids, "delta": payload})
        self._send({"type": "response.output_audio.done", **ids})
        self._send({"type": "response.output_audio_transcript.done", **ids, "transcript": TRANSCRIPT})
        if self.responses % 2 == 0:
            self._done("completed")  # done at once, as a burst is; the other half is still running at the barge-in
        self._later(self.rng.uniform(0.2, (RESPONSE_MS - 400) / 1000), self._speech_started)

    def _done(self, status: str) -> None:
        if self.active is None:
            return
        self._send({"type": "response.done", "response": {"id": self.active, "object": "realtime.response",
                                                          "status": status, "output": [], "usage": None}})
        self.active = None

    def _speech_started(self) -> None:
        self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                    "item_id": f"user_{self.index}_{self.responses}"})
        self._later(SPEECH_S, self._speech_stopped)

    def _speech_stopped(self) -> None:
        self._done("cancelled")  # the bridge's cancel normally came first
        user = f"user_{self.index}_{self.responses}"
        self._send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": user})
        self._send({"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": user})
        self._later(THINK_S, self._respond)


# --------------------------------------------------------------------------- the caller
class Caller(WSListener):
    """A Twilio Media Stream that plays at real time and echoes each mark exactly when it is due."""

    def __init__(self, results: Results, call_sid: str, stream_sid: str) -> None:
        super().__init__()
        self.results = results
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sequence = 0
        self.chunk = 0
        self.t0 = 0.0
        self.queued_ms = 0.0
        self.clock_ms = 0.0  # playback was at clock_ms at loop time clock_at (continuous while queued)
        self.clock_at = 0.0
        self.spans: list[tuple[float, float, str | None]] = []  # since the last clear
        self.pending: dict[str, asyncio.TimerHandle] = {}
        self.closed = False

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.closed:
            self.sequence += 1
            message["sequenceNumber"] = str(self.sequence)
            message["streamSid"] = self.stream_sid
            self.transport.send(WSMsgType.TEXT, orjson.dumps(message))

    def position(self, now: float) -> float:
        if self.clock_ms >= self.queued_ms:
            return self.queued_ms
        return min(self.queued_ms, self.clock_ms + (now - self.clock_at) * 1000.0)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(WSMsgType.TEXT, orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        self._send({"event": "start", "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": {"bot_profile_key": "bench-support", "is_sip_call": "false",
                                                        "original_caller_number": "+15557000000"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.t0 = self.clock_at = self.loop.time()
        self._tick()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        for handle in self.pending.values():
            handle.cancel()

    def _tick(self) -> None:
        due = int((self.loop.time() - self.t0) * 1000 // FRAME_MS) + 1
        while self.chunk < due:
            self.chunk += 1
            self._send({"event": "media", "media": {"track": "inbound", "chunk": str(self.chunk),
                                                    "timestamp": str((self.chunk - 1) * FRAME_MS),
                                                    "payload": SILENT_FRAME}})
        self.timer = self.loop.call_at(self.t0 + self.chunk * FRAME_MS / 1000, self._tick)

    def _echo(self, name: str) -> None:
        self.pending.pop(name, None)
        self._send({"event": "mark", "mark": {"name": name}})

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = self.loop.time()
        message = orjson.loads(frame.get_payload_as_bytes())
        event = message.get("event")
        if event == "media":
            payload = message["media"]["payload"]
            length_ms = len(base64.b64decode(payload)) / 8
            if self.position(now) >= self.queued_ms:  # the buffer had run dry: playback restarts now
                self.clock_ms, self.clock_at = self.queued_ms, now
            item_id = self.results.payload_item.pop(payload, None)
            if item_id is not None:
                self.results.item_call[item_id] = self.call_sid
            self.spans.append((self.queued_ms, self.queued_ms + length_ms, item_id))
            self.queued_ms += length_ms
        elif event == "mark":
            name = message["mark"]["name"]
            if self.position(now) >= self.queued_ms:
                self._echo(name)
            else:
                due = self.clock_at + (self.queued_ms - self.clock_ms) / 1000.0
                self.pending[name] = self.loop.call_at(due, self._echo, name)
        elif event == "clear":
            played = self.position(now)
            in_window = self.results.window[0] <= now < self.results.window[1]
            lag = self.results.lag
            behind_ms = max(0.0, now - lag.due) * 1000 if lag is not None else 0.0
            for start, end, item_id in self.spans:
                if item_id is not None and start < played and in_window:
                    self.results.heard[item_id] = self.results.heard.get(item_id, 0.0) + min(end, played) - start
                    self.results.behind_ms[item_id] = behind_ms
            self.spans.clear()
            self.queued_ms = self.clock_ms = played
            self.clock_at = now
            pending, self.pending = self.pending, {}
            for name, handle in pending.items():  # a clear echoes every pending mark at once
                handle.cancel()
                self._send({"event": "mark", "mark": {"name": name}})

    def hang_up(self) -> None:
        self._send({"event": "stop", "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}})
        if self.transport is not None:
            self.transport.send_close(1000)


# --------------------------------------------------------------------------- one run
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(stack: Stack, calls: int, seconds: float, run_id: int, seed: int) -> dict[str, Any]:
    results = Results()
    rng = random.Random(seed)
    server = await ws_create_server(lambda request: Session(results, rng), "127.0.0.1", 0,
                                    websocket_handshake_timeout=10)
    stack.model_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
    port = free_port()
    process = stack.start_target("voice", port)
    callers: list[Caller] = []
    samples = Samples()
    cpu_pct: dict[str, int] = {}
    try:
        await wait_for_http(f"http://127.0.0.1:{port}/health-check/ready")
        validator = RequestValidator(AUTH_TOKEN)
        for index in range(calls):
            caller = Caller(results, f"CA{run_id:08x}{index:024x}", f"MZ{run_id:08x}{index:024x}")
            # No webhook: the bench issues each call's stream URL itself (it holds the deployment's token).
            stream_url = issue_stream_url(f"http://127.0.0.1:{port}", derive_url_token_key(SERVICE_TOKEN),
                                          call_sid=caller.call_sid, tenant="bench-support", replica="bench",
                                          now_s=time.time(), ttl_s=600)
            headers = {"X-Twilio-Signature": validator.compute_signature(stream_url, {})}
            try:
                await ws_connect(lambda c=caller: c, stream_url, extra_headers=headers,
                                 websocket_handshake_timeout=20)
            except (OSError, TimeoutError) as exc:
                results.errors.append(f"call {index} not connected: {type(exc).__name__}")
                continue
            callers.append(caller)
            await asyncio.sleep(0.02)  # 50 new calls a second
        await asyncio.sleep(3.0)  # settle: every call up, its first answer under way
        loop = asyncio.get_running_loop()
        results.window = (loop.time(), loop.time() + seconds)
        samples.window_start_ns = now_ns()
        lag = results.lag = LoopLag(samples)
        pids = {"loadgen": os.getpid(), "voice": process.pid,
                "ai_app": [p.pid for p in (stack.ai_process, stack.app_process) if p is not None]}
        cpu_before = {name: sum(cpu_seconds(p) for p in (pid if isinstance(pid, list) else [pid]))
                      for name, pid in pids.items()}
        await asyncio.sleep(seconds)
        cpu_pct = {name: round(100 * (sum(cpu_seconds(p) for p in (pid if isinstance(pid, list) else [pid]))
                                      - cpu_before[name]) / seconds)
                   for name, pid in pids.items()}
        lag.stop()
        for caller in callers:
            caller.hang_up()
        await wait_for_outbox(port)  # the voice server's outbox delivers the last records
        records = await fetch_records(stack, [c.call_sid for c in callers])
        for _ in range(30):  # and the App server has stored them all: until two readings 2 s apart agree
            await asyncio.sleep(2.0)
            again = await fetch_records(stack, [c.call_sid for c in callers])
            if again == records:
                break
            records = again
    finally:
        stop_process(process)
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()
    errors = [float(results.truncated[i]) - heard for i, heard in results.heard.items() if i in results.truncated]
    # Barge-ins whose clear this process handled on time (its own 10 ms timer not overdue by 5 ms or more).
    on_time = [abs(float(results.truncated[i]) - heard) for i, heard in results.heard.items()
               if i in results.truncated and results.behind_ms.get(i, 0.0) < 5.0]
    deleted_but_heard = [i for i, heard in results.heard.items() if i in results.deleted and heard >= 1.0]
    word_gaps = []
    for item_id, heard in results.heard.items():
        text = records.get((results.item_call.get(item_id, ""), item_id))
        if text is None or item_id not in results.truncated:
            continue
        recorded = len(text.rstrip("…").split()) / WORDS
        word_gaps.append(recorded - heard / RESPONSE_MS)
    abs_errors = [abs(e) for e in errors]
    abs_gaps = [abs(g) for g in word_gaps]
    return {
        "calls": calls, "barge_ins": len(errors), "err_p50_ms": pct(abs_errors, 0.5),
        "err_p99_ms": pct(abs_errors, 0.99), "err_max_ms": max(abs_errors, default=None),
        "signed_err_mean_ms": statistics.fmean(errors) if errors else None,
        "on_time_n": len(on_time), "on_time_p50_ms": pct(on_time, 0.5), "on_time_p99_ms": pct(on_time, 0.99),
        "on_time_max_ms": max(on_time, default=None),
        "deleted_but_heard": len(deleted_but_heard), "records": len(word_gaps),
        "words_gap_p50_pct": 100 * (pct(abs_gaps, 0.5) or 0), "words_gap_p99_pct": 100 * (pct(abs_gaps, 0.99) or 0),
        "words_gap_max_pct": 100 * max(abs_gaps, default=0.0),
        "within_10pct": sum(1 for g in abs_gaps if g <= 0.10), "loadgen_lag_p99_ms": lag_p99(samples),
        "calls_connected": len(callers), "surprises": results.errors[:5], "cpu_pct": cpu_pct,
    }


async def wait_for_outbox(port: int, timeout_s: float = 30.0) -> None:
    """Until the voice server's outbox is empty (bounded), so the App server holds every record."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    await asyncio.sleep(1.0)
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    depth = [line for line in text.splitlines() if line.startswith("switchboard_outbox_depth ")]
                    if depth and float(depth[0].split()[1]) == 0:
                        return


def lag_p99(samples: Samples) -> float | None:
    values = samples.by_kind.get("loadgen_lag", [])
    value = pct([v / 1e6 for v in values], 0.99)
    return round(value, 1) if value is not None else None


async def fetch_records(stack: Stack, call_sids: list[str]) -> dict[tuple[str, str], str]:
    """(call sid, item id) -> the App server's text of that assistant message."""
    found: dict[tuple[str, str], str] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.app_port}", timeout=10.0,
                                 headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as http:
        for call_sid in call_sids:
            answer = await http.get("/api/conversations", params={"call_sid": call_sid})
            if answer.status_code != 200:
                continue
            for conversation in answer.json()["conversations"]:
                for message in conversation["messages"]:
                    prefix = f"{call_sid}:assistant:"
                    if message["message_id"].startswith(prefix):
                        found[(call_sid, message["message_id"][len(prefix):])] = message["text"]
    return found


def table(rows: list[dict[str, Any]]) -> str:
    def f(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| calls | barge-ins | \\|audio_end_ms − heard\\| p50 / p99 / max (ms) | mean signed (ms) | same, clear "
             "handled on time: n, p50 / p99 / max | heard but deleted | records | words − heard fraction p50 / p99 / "
             "max (points) | within ±10 % | loadgen lag p99 ms |",
             "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['calls']} | {r['barge_ins']} | {f(r['err_p50_ms'])} / {f(r['err_p99_ms'])} / {f(r['err_max_ms'])} | "
            f"{f(r['signed_err_mean_ms'])} | {r['on_time_n']}, {f(r['on_time_p50_ms'])} / {f(r['on_time_p99_ms'])} / "
            f"{f(r['on_time_max_ms'])} | {r['deleted_but_heard']} | {r['records']} | "
            f"{f(r['words_gap_p50_pct'])} / {f(r['words_gap_p99_pct'])} / {f(r['words_gap_max_pct'])} | "
            f"{r['within_10pct']}/{r['records']} | {f(r['loadgen_lag_p99_ms'])} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    stack = Stack(Path(args.workdir), 0)
    rows = []
    try:
        await stack.start_ai()
        await stack.start_app()
        for run_id, calls in enumerate(int(c) for c in args.calls.split(",")):
            row = await run(stack, calls, args.seconds, run_id + 1, args.seed + run_id)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stack.stop()
    print(table(rows))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="50,150", help="comma-separated concurrent call counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", default="var/bench/barge_in_accuracy")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    Path(arguments.workdir).mkdir(parents=True, exist_ok=True)
    uvloop.install()
    raise SystemExit(asyncio.run(main(arguments)))

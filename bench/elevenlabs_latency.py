"""ElevenLabs-mode latency bench (issue 7): the time our voice server adds around the TTS, with fakes.

Processes: the voice server (`switchboard serve voice`, `nice -n -20 taskset -c 1`), the AI and App servers
(core 0), and this process (core 0) holding every fake, so both ends of every sample are read from one
clock (`time.perf_counter_ns`): a fake Realtime model in text mode (a websockets server streaming
`response.output_text.delta` of 2-6 characters every 20 ms), `FakeElevenLabs` (src/switchboard/fakes,
stamped on receipt and on send by a small subclass), and one fake Twilio caller (bench/loadgen.py's
`FakeCaller`: 20 ms frames, marks echoed when played, `clear` honoured).

Per response (the greeting, then one per caller turn; every 2nd interrupted 1.5 s after its first audio reached the caller):
- (a1) first text delta sent by the model -> first message ElevenLabs receives for that context
  (the context's initialising " ", sent as soon as the response's first delta arrives);
- (a2) first delta containing a word boundary sent -> first message with text for that context
  (the server sends text to ElevenLabs on word boundaries);
- (b) ElevenLabs' first audio chunk of the context sent -> the Twilio `media` carrying that payload at the
  caller (later chunks are held by playback pacing on purpose, reported apart);
- (c) barge-in: `speech_started` sent -> `clear` at the caller, -> `close_context` at ElevenLabs,
  -> `response.cancel` at the model (when a response was still active).

    .venv/bin/python bench/elevenlabs_latency.py [--responses 24] [--doc]
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
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from picows import WSFrame, WSMsgType, WSTransport
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bridge_latency  # noqa: E402
from bridge_latency import LOAD_CORE, NICE, REPO, free_port, machine, place_call, stop_process, wait_for_http  # noqa: E402
from loadgen import FakeCaller, LoadGenerator, Scenario, now_ns  # noqa: E402
from voice_procs import VoiceBenchStack  # noqa: E402

from switchboard.fakes.elevenlabs_server import FakeElevenLabs, FakeTtsConnection  # noqa: E402

CHARS_PER_SECOND = 20.0
DELTA_SIZES = (3, 5, 4, 6, 2, 4, 5, 3)
DELTA_INTERVAL_S = 0.020
SENTENCES = [
    "Certainly, our store opens at nine on weekdays and ten on Saturdays, and we close at six every evening. "
    "Parking is free behind the building.",
    "Absolutely, returns are accepted within thirty days with a receipt; we email a prepaid label and refund "
    "your card within three business days.",
    "Let me see: standard shipping takes three to five days, express delivery arrives the next day if you "
    "order before two in the afternoon.",
    "Unfortunately that kayak is out of stock right now, but a new shipment is expected next week and we can "
    "hold one for you if you like.",
]


# --------------------------------------------------------------------------- stamped ElevenLabs fake
class StampedTtsConnection(FakeTtsConnection):
    """FakeTtsConnection that stamps each valid client message on receipt and each server message on send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received_at: list[tuple[int, dict[str, Any]]] = []
        self.sent_at: list[tuple[int, dict[str, Any]]] = []

    async def _receive(self, raw: str | bytes) -> bool:
        received_ns = now_ns()
        before = len(self.received)
        keep_going = await super()._receive(raw)
        if len(self.received) > before:
            self.received_at.append((received_ns, self.received[before]))
        return keep_going

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent_at.append((now_ns(), message))
        await super()._send(message)


class StampedElevenLabs(FakeElevenLabs):
    async def _handle(self, connection: ServerConnection) -> None:
        tts_connection = StampedTtsConnection(self, connection, len(self.connections))
        self.connections.append(tts_connection)
        async with self._changed:
            self._changed.notify_all()
        await tts_connection.run()


# --------------------------------------------------------------------------- caller that keeps a log
class LoggingCaller(FakeCaller):
    """FakeCaller that also records every `media` payload and `clear` with its receipt time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[int, str, str]] = []  # (received_ns, event, payload or "")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        received_ns = now_ns()
        if frame.fin and frame.msg_type == WSMsgType.TEXT:
            message = orjson.loads(frame.get_payload_as_bytes())
            event = message.get("event")
            if event in ("media", "clear"):
                self.log.append((received_ns, event, message["media"]["payload"] if event == "media" else ""))
        super().on_ws_frame(transport, frame)


# --------------------------------------------------------------------------- fake text-mode model
class TextModel:
    """One Realtime session in text mode, driving the conversation on a script."""

    def __init__(self, responses: int, barge_after_s: float) -> None:
        self.responses_wanted = responses
        self.barge_after_s = barge_after_s
        self.connection: ServerConnection | None = None
        self.count = 0
        self.active: str | None = None
        self.first_delta_ns: dict[str, int] = {}
        self.first_boundary_ns: dict[str, int] = {}
        self.barges: list[tuple[str, int]] = []  # (response_id being heard, speech_started sent ns)
        self.cancels: list[int] = []
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.finished = asyncio.Event()
        self.caller: LoggingCaller | None = None  # set once the call is placed
        self._seq = 0

    async def send(self, event: dict[str, Any]) -> None:
        assert self.connection is not None
        self._seq += 1
        event["event_id"] = f"event_{self._seq}"
        await self.connection.send(json.dumps(event))

    async def handle(self, connection: ServerConnection) -> None:
        self.connection = connection
        session = {"id": "sess_1", "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}
        await asyncio.sleep(0.15)
        await self.send({"type": "session.created", "session": session})
        async with asyncio.TaskGroup() as tasks:
            try:
                async for raw in connection:
                    received_ns = now_ns()
                    data = json.loads(raw)
                    self.received.append((received_ns, data))
                    kind = data.get("type")
                    if kind == "session.update":
                        await self.send({"type": "session.updated", "session": session})
                    elif kind == "response.create" and self.active is None:
                        metadata = (data.get("response") or {}).get("metadata")
                        tasks.create_task(self.respond(metadata), name="model-response")
                    elif kind == "response.cancel":
                        self.cancels.append(received_ns)
                    elif kind == "conversation.item.delete":
                        await self.send({"type": "conversation.item.deleted", "item_id": data["item_id"]})
                    elif kind == "conversation.item.create":
                        item = dict(data["item"], id=data["item"].get("id") or f"item_c{self._seq}")
                        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
            except ConnectionClosed:
                pass
            finally:
                self.finished.set()

    async def respond(self, metadata: Any) -> None:
        self.count += 1
        n = self.count
        response_id, item_id = f"resp_{n}", f"item_{n}"
        self.active = response_id
        media_before = self.caller.media_received if self.caller is not None else 0
        text = SENTENCES[n % len(SENTENCES)]
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send({"type": "response.created", "response": {
            "id": response_id, "object": "realtime.response", "status": "in_progress", "output": [],
            "metadata": metadata}})
        await self.send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                         "item": {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                                  "status": "in_progress", "content": []}})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        position = index = 0
        sent = ""
        while position < len(text):
            delta = text[position:position + DELTA_SIZES[index % len(DELTA_SIZES)]]
            position += len(delta)
            index += 1
            stamp = now_ns()
            self.first_delta_ns.setdefault(response_id, stamp)
            if " " in delta and sent.strip() and response_id not in self.first_boundary_ns:
                self.first_boundary_ns[response_id] = stamp
            sent += delta
            await self.send({"type": "response.output_text.delta", **ids, "delta": delta})
            await asyncio.sleep(max(0.0, t0 + index * DELTA_INTERVAL_S - loop.time()))
        await self.send({"type": "response.output_text.done", **ids, "text": text})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "completed", "content": [{"type": "output_text", "text": text}]}
        await self.send({"type": "response.output_item.done", "response_id": response_id, "output_index": 0,
                         "item": item})
        await self.send({"type": "response.done", "response": {
            "id": response_id, "object": "realtime.response", "status": "completed", "output": [item],
            "metadata": metadata, "usage": None}})
        self.active = None
        if n >= self.responses_wanted:
            return
        # The caller's turn, by what it actually heard: every 2nd answer is interrupted barge_after_s after
        # its first audio reached the caller; the others are heard to the end, then 0.8 s of silence.
        async with asyncio.timeout(30):
            while self.caller is None:  # noqa: ASYNC110 - polling the fakes' state (bounded)
                await asyncio.sleep(0.01)
        caller = self.caller
        async with asyncio.timeout(30):
            while caller.media_received <= media_before:  # noqa: ASYNC110 - polling the fakes' state (bounded)
                await asyncio.sleep(0.005)
        heard_from = loop.time()
        if n % 2 == 0:
            await asyncio.sleep(max(0.0, heard_from + self.barge_after_s - loop.time()))
            self.barges.append((response_id, now_ns()))
        else:
            async with asyncio.timeout(30):
                # Wait for the flush's audio too: the answer has played when the caller's buffer runs dry.
                while self.active is None and not (loop.time() > caller.play_end + 0.8 and  # noqa: ASYNC110 - polling the fakes' state (bounded)
                                                    loop.time() > heard_from + 1.0):
                    await asyncio.sleep(0.01)
        user_item = f"user_{n}"
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": user_item})
        await asyncio.sleep(0.4)
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": user_item})
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": user_item})
        await asyncio.sleep(0.1)
        if self.active is None:
            await self.respond(None)  # server VAD's create_response: no client metadata


# --------------------------------------------------------------------------- analysis
def analyse(model: TextModel, tts: StampedTtsConnection, caller: LoggingCaller) -> dict[str, Any]:
    first_message: dict[str, int] = {}
    first_text: dict[str, int] = {}
    close_context: dict[str, int] = {}
    for received_ns, message in tts.received_at:
        context_id = message.get("context_id")
        if context_id is None:
            continue
        first_message.setdefault(context_id, received_ns)
        if (message.get("text") or "").strip():
            first_text.setdefault(context_id, received_ns)
        if message.get("close_context"):
            close_context.setdefault(context_id, received_ns)
    a1 = {r: (first_message[r] - t) / 1e6 for r, t in model.first_delta_ns.items() if r in first_message}
    a2 = {r: (first_text[r] - t) / 1e6 for r, t in model.first_boundary_ns.items() if r in first_text}
    # (b): audio chunks in the order sent, matched in order to the caller's media with the same payload.
    media = [(t, p) for t, e, p in caller.log if e == "media"]
    first_chunk, later_chunk, unmatched = [], [], 0
    first_after_barge: list[float] = []  # first chunk of the answer that follows a barge-in
    barged = {response_id for response_id, _ in model.barges}
    seen_context: set[str] = set()
    cursor = 0
    for sent_ns, message in tts.sent_at:
        if not message.get("audio"):
            continue
        context_id = message.get("contextId")
        match = next((i for i in range(cursor, len(media)) if media[i][1] == message["audio"]), None)
        if match is None:
            unmatched += 1  # dropped on purpose after a barge-in (or never delivered)
            continue
        cursor = match + 1
        delay_ms = (media[match][0] - sent_ns) / 1e6
        if context_id in seen_context:
            later_chunk.append(delay_ms)
        elif f"resp_{int(str(context_id).split('_')[1]) - 1}" in barged:
            first_after_barge.append(delay_ms)
        else:
            first_chunk.append(delay_ms)
        seen_context.add(context_id)
    clears = [t for t, e, _ in caller.log if e == "clear"]
    clear_ms, close_ms, cancel_ms = [], [], []
    for response_id, barge_ns in model.barges:
        after = [t for t in clears if t >= barge_ns]
        if after:
            clear_ms.append((after[0] - barge_ns) / 1e6)
        if response_id in close_context and close_context[response_id] >= barge_ns:
            close_ms.append((close_context[response_id] - barge_ns) / 1e6)
        cancel = [t for t in model.cancels if t >= barge_ns]
        if cancel and cancel[0] - barge_ns < 1e9:
            cancel_ms.append((cancel[0] - barge_ns) / 1e6)
    # Nothing of an interrupted answer may reach the caller after its `clear`: count the `media` received
    # between that `clear` and the first audio ElevenLabs sent for any later context (the fake's tone
    # depends only on length, so payloads alone cannot tell answers apart).
    late_after_clear = 0
    for response_id, barge_ns in model.barges:
        clear_at = next((t for t in clears if t >= barge_ns), None)
        if clear_at is None:
            continue
        next_audio_at = next((t for t, m in tts.sent_at if m.get("audio") and t > clear_at
                              and m.get("contextId") != response_id), 1 << 63)
        late_after_clear += sum(1 for t, _ in media if clear_at < t < next_audio_at)
    return {
        "a1_first_delta_to_first_tts_message_ms": stats(list(a1.values())),
        "a2_first_word_boundary_to_first_tts_text_ms": stats(list(a2.values())),
        "b_first_audio_chunk_to_twilio_media_ms": stats(first_chunk),
        "b_first_chunk_after_a_barge_in_ms": stats(first_after_barge),
        "b_later_chunks_to_media_ms_paced": stats(later_chunk),
        "audio_chunks_not_delivered": unmatched,
        "c_speech_started_to_clear_ms": stats(clear_ms),
        "c_speech_started_to_close_context_ms": stats(close_ms),
        "c_speech_started_to_response_cancel_ms": stats(cancel_ms),
        "barge_ins": len(model.barges),
        "media_of_interrupted_context_after_clear": late_after_clear,
        "responses": model.count,
        "tts_protocol_errors": tts.protocol_errors,
        "raw_ms": {"a1": _round(a1.values()), "a2": _round(a2.values()), "b_first": _round(first_chunk), "b_after_barge": _round(first_after_barge),
                   "clear": _round(clear_ms), "close_context": _round(close_ms)},
    }


def _round(values: Any) -> list[float]:
    return [round(v, 3) for v in values]


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(ordered[len(ordered) // 2], 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max": round(ordered[-1], 3), "min": round(ordered[0], 3)}


# --------------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {LOAD_CORE})
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    bridge_latency.TENANT_YAML = bridge_latency.TENANT_YAML.replace(
        "voice: {provider: openai, name: marin, speed: 1.0}",
        "voice: {provider: elevenlabs, voice_id: voice123, model: eleven_flash_v2_5}")
    assert "elevenlabs" in bridge_latency.TENANT_YAML
    model = TextModel(args.responses, args.barge_after_s)
    gen = LoadGenerator(Scenario())
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python bench/elevenlabs_latency.py " + " ".join(map(shlex.quote, sys.argv[1:]))}
    async with serve(model.handle, "127.0.0.1", 0, compression=None, max_size=None) as model_server, \
            StampedElevenLabs(chars_per_second=CHARS_PER_SECOND,
                              next_chunk_delay_s=args.next_chunk_delay_s) as eleven:
        model_port = next(iter(model_server.sockets)).getsockname()[1]
        with tempfile.TemporaryDirectory(prefix="switchboard-el-") as tmp:
            stack = VoiceBenchStack(Path(tmp), model_port)
            process = None
            try:
                await stack.start()
                port = free_port()
                process = stack.start_voice(port, ELEVENLABS_API_KEY=eleven.api_key,
                                            ELEVENLABS_BASE_URL=eleven.base_url)
                await wait_for_http(f"http://127.0.0.1:{port}/health-check/ready")
                original = bridge_latency.FakeCaller
                bridge_latency.FakeCaller = LoggingCaller  # place_call builds the caller by this name
                try:
                    async with httpx.AsyncClient(timeout=10.0) as http:
                        caller = await place_call(gen, http, "voice", port, 1, int(time.time()) & 0xFFFF, preopen=True)
                finally:
                    bridge_latency.FakeCaller = original
                assert isinstance(caller, LoggingCaller)
                model.caller = caller
                tts = await eleven.wait_for_connection(timeout_s=10)
                assert isinstance(tts, StampedTtsConnection)
                async with asyncio.timeout(args.responses * 12 + 30):
                    while model.count < args.responses or model.active is not None:  # noqa: ASYNC110 - polling the fakes' state (bounded)
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.2 + len(SENTENCES[0]) / CHARS_PER_SECOND + 0.5)  # last answer plays out
                caller.hang_up()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await model.finished.wait()
                result.update(analyse(model, tts, caller))
                if args.trace:
                    t0 = model.first_delta_ns.get("resp_1", 0)
                    for t, m in tts.received_at:
                        print("tts<-", round((t - t0) / 1e6, 1), {k: (v if k != "voice_settings" else "...")
                                                                 for k, v in m.items()})
                    for t, m in tts.sent_at:
                        print("tts->", round((t - t0) / 1e6, 1), m.get("contextId"), len(m.get("audio") or ""),
                              m.get("isFinal"))
                    for t, e, p in caller.log:
                        print("caller<-", round((t - t0) / 1e6, 1), e, len(p))
                    for r, t in model.barges:
                        print("barge", r, round((t - t0) / 1e6, 1))
                result["voice_server_warnings"] = [line for line in stack.voice_log(port).splitlines()
                                                   if '"warning"' in line or '"error"' in line][:5]
            finally:
                if process is not None:
                    stop_process(process)
                stack.stop()
    print(json.dumps(result, indent=1))
    if args.doc:
        with (REPO / "docs/benchmarks.md").open("a") as doc:
            doc.write(render(result))
    return 0


def render(r: dict[str, Any]) -> str:
    def row(name: str, key: str) -> str:
        s = r[key]
        return f"| {name} | {s.get('n')} | {s.get('p50')} | {s.get('p95')} | {s.get('max')} |"

    return "\n".join([
        "",
        "## ElevenLabs mode: time the voice server adds around the TTS (issue 7)",
        "",
        f"- Date: {r['date']}; machine: {machine()}; Command: `{r['command'].strip()}`",
        "- Voice server in its own process (`switchboard serve voice`, `nice -n -20 taskset -c 1`, tenant voice "
        "`{provider: elevenlabs}`, transcriber none); AI and App servers on core 0; this process (core 0) holds the "
        "fake text-mode Realtime model, `FakeElevenLabs` (stamped on receipt / on send) and one fake Twilio caller, "
        "so both ends of every sample come from one clock. The model streams each ~130-character answer as "
        "`response.output_text.delta` of 2-6 characters every 20 ms; ElevenLabs speaks 20 characters a second "
        "(first chunk after 120 characters or the flush, 50 ms generation delay, 3 s before each later chunk so "
        "a barge-in lands mid-synthesis); every 2nd answer is interrupted 1.5 s after its first audio reached "
        "the caller, the others are heard to the end. One call; each figure is per response (per barge-in for c).",
        "- Times in ms include loopback and both event loops (this process runs websockets servers, so its own "
        "receive path is in every figure).",
        "",
        "| figure | n | p50 | p95 | max |",
        "|---|---|---|---|---|",
        row("(a1) model's first text delta sent -> first ElevenLabs message for the response (context init)",
            "a1_first_delta_to_first_tts_message_ms"),
        row("(a2) first delta with a word boundary sent -> first ElevenLabs message with text",
            "a2_first_word_boundary_to_first_tts_text_ms"),
        row("(b) ElevenLabs' first audio chunk sent -> Twilio `media` with it at the caller",
            "b_first_audio_chunk_to_twilio_media_ms"),
        row("(b) same, for the answer right after a barge-in (see the note below)", "b_first_chunk_after_a_barge_in_ms"),
        row("(b') later chunks -> `media` (held by playback pacing on purpose)", "b_later_chunks_to_media_ms_paced"),
        row("(c) `speech_started` sent -> `clear` at the caller", "c_speech_started_to_clear_ms"),
        row("(c) `speech_started` sent -> `close_context` at ElevenLabs", "c_speech_started_to_close_context_ms"),
        row("(c) `speech_started` sent -> `response.cancel` at the model (only if still active)",
            "c_speech_started_to_response_cancel_ms"),
        "",
        f"- Responses {r['responses']}, barge-ins {r['barge_ins']}; audio chunks never delivered (cut by a "
        f"barge-in) {r['audio_chunks_not_delivered']}; `media` of an interrupted context after its `clear`: "
        f"{r['media_of_interrupted_context_after_clear']}; ElevenLabs protocol errors {r['tts_protocol_errors']}.",
        "",
    ])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=24)
    parser.add_argument("--barge-after-s", type=float, default=1.5,
                        help="barge-in this long after the answer's first audio reached the caller")
    parser.add_argument("--next-chunk-delay-s", type=float, default=3.0,
                        help="ElevenLabs generation delay before each later chunk (so a barge-in lands mid-synthesis)")
    parser.add_argument("--trace", action="store_true", help="print the message timeline")
    parser.add_argument("--doc", action="store_true", help="append a section to docs/benchmarks.md")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))

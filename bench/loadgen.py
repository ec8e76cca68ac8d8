"""The load generator: N fake Twilio callers and one fake OpenAI Realtime server in one process.

Both sides live in one process so every timestamp comes from one clock (`time.perf_counter_ns`).
Each audio frame carries a unique payload (a sequence number in the 160 μ-law bytes); the side
that sends it stamps it, the side that receives it looks the stamp up. The sockets are picows
(callbacks, no task per message) so that the generator, not the server under test, is cheap.
Bench code: nothing here is imported by `src/`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FILLER = b"\xff" * FRAME_BYTES
now_ns = time.perf_counter_ns


def unique_payload(tag: bytes, owner: int, seq: int) -> str:
    """A valid 20 ms μ-law frame, base64, unique per (tag, owner, seq)."""
    head = tag + struct.pack("<IQ", owner, seq)
    return base64.b64encode(head + FILLER[len(head):]).decode()


@dataclass
class Scenario:
    """How the fake model behaves on every session."""

    session_created_delay_s: float = 0.150  # models a real network + TLS + session set-up
    response_ms: int = 2000  # audio per response
    burst: bool = False  # False: 20 ms deltas every 20 ms (real time); True: all deltas at once
    barge_in_at_ms: int = 1000  # odd responses are interrupted this far in (by stream time sent)
    idle_before_speech_ms: int = 800  # after a completed response, the caller starts talking
    speech_ms: int = 400  # speech_started -> speech_stopped
    think_ms: int = 100  # speech_stopped -> next response
    barge_in_every: int = 2  # every n-th response (counting the greeting as 1) is interrupted
    # Frames sent within this long of a call's `start` count as "up_setup"/"down_setup", not "up"/"down"
    # (caller audio waits while the model session opens; that is set-up time, not relay latency).
    setup_window_ms: int = 0
    # "speech": the model's VAD interrupts (`speech_started`); "key": the caller presses keys (Twilio `dtmf`),
    # the bridge interrupts, and after SWITCHBOARD_DTMF_PAUSE_MS sends the digits as one user message.
    barge_in_by: str = "speech"
    barge_in_keys: str = "45"


@dataclass
class Samples:
    """Latency samples (ns) of one measurement window, by kind."""

    # Nothing counts until the window opens (set by the runner after ramp-up and settling).
    window_start_ns: int = 1 << 62
    window_end_ns: int = 1 << 63
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, sent_ns: int, received_ns: int) -> None:
        if self.window_start_ns <= sent_ns < self.window_end_ns:
            self.by_kind.setdefault(kind, []).append(received_ns - sent_ns)

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def in_window(self, sent_ns: int) -> bool:
        return self.window_start_ns <= sent_ns < self.window_end_ns


class LoadGenerator:
    """Shared state: stamp registries, samples, the scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.samples = Samples()
        self.caller_payloads: dict[str, tuple[FakeCaller, int]] = {}
        self.model_payloads: dict[str, tuple[FakeModelSession, int]] = {}
        self.sessions: list[FakeModelSession] = []
        self.callers: list[FakeCaller] = []
        self._server: asyncio.Server | None = None
        self.model_port = 0

    def reset(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.samples = Samples()
        self.caller_payloads.clear()
        self.model_payloads.clear()
        self.sessions.clear()
        self.callers.clear()

    async def start_model_server(self) -> int:
        self._server = await ws_create_server(
            lambda request: FakeModelSession(self), "127.0.0.1", 0, websocket_handshake_timeout=10
        )
        self.model_port = self._server.sockets[0].getsockname()[1]
        return self.model_port

    async def stop_model_server(self) -> None:
        if self._server is not None:
            self._server.close()
            async with asyncio.timeout(5):
                await self._server.wait_closed()


def _close_on_peer_close(transport: WSTransport, frame: WSFrame) -> None:
    transport.send_close(frame.get_close_code())
    transport.disconnect()


# --------------------------------------------------------------------------- fake model
class FakeModelSession(WSListener):
    """One Realtime session: GA event shapes, audio at real time (or a burst), VAD on a script."""

    def __init__(self, gen: LoadGenerator) -> None:
        super().__init__()
        self.gen = gen
        self.index = len(gen.sessions)
        gen.sessions.append(self)
        self.transport: WSTransport | None = None
        self.loop = asyncio.get_running_loop()
        self.call: FakeCaller | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.responses = 0
        self.completed = 0  # responses whose audio was sent whole (each owes an assistant message in the record)
        self.response_id: str | None = None
        self.item_id = ""
        self.metadata: Any = None
        self.deltas_total = 0
        self.deltas_sent = 0
        self.stream_t0 = 0.0
        self.delta_seq = 0
        self.event_seq = 0
        self.barge_in_ns = 0  # speech_started sent while a response was active, awaiting clear/cancel
        self.awaiting_clear = False
        self.awaiting_cancel = False
        self.closed = False
        self.quiet = False
        self.last_append_ns = 0
        self.keys_sent_ns = 0  # the last key of a keypad barge-in, awaiting the digits' user message

    # ---- plumbing
    def _send(self, event: dict[str, Any]) -> None:
        if self.transport is None or self.closed:
            return
        self.event_seq += 1
        event["event_id"] = f"event_{self.index}_{self.event_seq}"
        self.transport.send(WSMsgType.TEXT, orjson.dumps(event))

    def _later(self, delay_s: float, callback: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay_s, callback)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._later(self.gen.scenario.session_created_delay_s, self._session_created)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()

    def _session_created(self) -> None:
        self.timer = None
        self._send({"type": "session.created", "session": self._session()})

    def _session(self) -> dict[str, Any]:
        return {"id": f"sess_{self.index}", "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}

    # ---- client events
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        received_ns = now_ns()
        if frame.msg_type == WSMsgType.CLOSE:
            _close_on_peer_close(transport, frame)
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        if not frame.fin:
            self.gen.samples.count("fragmented_frames")
            return
        data = orjson.loads(frame.get_payload_as_bytes())
        kind = data.get("type")
        if kind == "input_audio_buffer.append":
            entry = self.gen.caller_payloads.pop(data["audio"], None)
            if entry is None:
                self.gen.samples.count("unknown_appends")
                return
            caller, sent_ns = entry
            self.last_append_ns = received_ns
            if self.call is None:
                self.call = caller
                caller.session = self
            setup_ns = self.gen.scenario.setup_window_ms * 1_000_000
            kind = "up_setup" if setup_ns and sent_ns < caller.start_sent_ns + setup_ns else "up"
            self.gen.samples.add(kind, sent_ns, received_ns)
        elif kind == "session.update":
            self._send({"type": "session.updated", "session": self._session()})
        elif kind == "response.create":
            if self.response_id is not None:
                self._send(self._error("conversation_already_has_active_response", data.get("event_id")))
                return
            self._start_response((data.get("response") or {}).get("metadata"))
        elif kind == "response.cancel":
            if self.awaiting_cancel:
                self.awaiting_cancel = False
                self.gen.samples.add("barge_cancel", self.barge_in_ns, received_ns)
                self._finish_response("cancelled")
            else:
                self._send(self._error("response_cancel_not_active", data.get("event_id")))
        elif kind == "conversation.item.truncate":
            self.gen.samples.count("truncates")
            self._send({"type": "conversation.item.truncated", "item_id": data["item_id"],
                        "content_index": data.get("content_index", 0), "audio_end_ms": data["audio_end_ms"]})
        elif kind == "conversation.item.create":
            item = data.get("item") or {}
            if item.get("role") == "user" and self.keys_sent_ns:
                self.gen.samples.add("keypad_message", self.keys_sent_ns, received_ns)
                self.keys_sent_ns = 0
        elif kind == "input_audio_buffer.clear":
            self._send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.delete":
            self._send({"type": "conversation.item.deleted", "item_id": data["item_id"]})

    def _error(self, code: str, event_id: Any) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": code,
                                           "param": None, "event_id": event_id}}

    # ---- the script
    def _start_response(self, metadata: Any) -> None:
        self.responses += 1
        self.response_id = f"resp_{self.index}_{self.responses}"
        self.item_id = f"item_{self.index}_{self.responses}"
        self.metadata = metadata
        self._send({"type": "response.created", "response": {
            "id": self.response_id, "object": "realtime.response", "status": "in_progress", "output": [],
            "metadata": metadata}})
        self._send({"type": "response.output_item.added", "response_id": self.response_id, "output_index": 0,
                    "item": {"id": self.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                             "status": "in_progress", "content": []}})
        scenario = self.gen.scenario
        self.deltas_total = scenario.response_ms // FRAME_MS
        self.deltas_sent = 0
        self.stream_t0 = self.loop.time()
        # Every barge_in_every-th response is interrupted; the greeting (response 1) never is.
        self.interrupt_after = (
            scenario.barge_in_at_ms // FRAME_MS if self.responses % scenario.barge_in_every == 0 else None
        )
        if scenario.burst:
            self._burst()
        else:
            self._tick()

    def _send_delta(self) -> None:
        self.delta_seq += 1
        payload = unique_payload(b"M", self.index, self.delta_seq)
        self.deltas_sent += 1
        sent_ns = now_ns()
        self.gen.model_payloads[payload] = (self, sent_ns)
        if self.gen.samples.in_window(sent_ns):
            self.gen.samples.count("down_sent")
        self._send({"type": "response.output_audio.delta", "response_id": self.response_id, "item_id": self.item_id,
                    "output_index": 0, "content_index": 0, "delta": payload})

    def quiesce(self) -> None:
        """The caller is about to hang up: send no more audio, start nothing new (so nothing is in flight)."""
        self.quiet = True

    def _tick(self) -> None:
        self.timer = None
        if self.closed or self.response_id is None:
            return
        if self.quiet:
            self._finish_response("completed")
            return
        due = int((self.loop.time() - self.stream_t0) * 1000 // FRAME_MS) + 1
        while self.deltas_sent < min(due, self.deltas_total):
            if self.interrupt_after is not None and self.deltas_sent >= self.interrupt_after:
                self._barge_in()
                return
            self._send_delta()
        if self.deltas_sent >= self.deltas_total:
            self._finish_response("completed")
            return
        self.timer = self.loop.call_at(self.stream_t0 + (self.deltas_sent * FRAME_MS) / 1000, self._tick)

    def _burst(self) -> None:
        # As the real service does: audio generated faster than real time, all of it at once.
        while self.deltas_sent < self.deltas_total:
            self._send_delta()
        if self.interrupt_after is not None:
            self._later(self.gen.scenario.barge_in_at_ms / 1000, self._barge_in)
        else:
            self._finish_response("completed")

    def _barge_in(self) -> None:
        self.timer = None
        self.barge_in_ns = now_ns()
        self.awaiting_clear = self.call is not None
        self.awaiting_cancel = self.response_id is not None
        if self.gen.scenario.barge_in_by == "key" and self.call is not None:
            # The caller presses keys: the bridge owes a clear and a cancel for the first, then the digits.
            for key in self.gen.scenario.barge_in_keys:
                self.call.press(key)
            self.keys_sent_ns = now_ns()
            if self.awaiting_cancel:
                self._later(1.0, self._cancel_never_came)
            return
        self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                    "item_id": f"user_{self.index}_{self.responses}"})
        if self.awaiting_cancel:
            # The bridge owes us a response.cancel; if it never comes, end the response anyway.
            self._later(1.0, self._cancel_never_came)
        else:
            self._later(self.gen.scenario.speech_ms / 1000, self._speech_stopped)

    def _cancel_never_came(self) -> None:
        self.timer = None
        self.gen.samples.count("cancel_missing")
        self.awaiting_cancel = False
        self._finish_response("cancelled")

    def _finish_response(self, status: str) -> None:
        response_id = self.response_id
        if response_id is None:
            return
        if status == "completed":
            self.completed += 1
            base = {"response_id": response_id, "item_id": self.item_id, "output_index": 0, "content_index": 0}
            self._send({"type": "response.output_audio.done", **base})
            self._send({"type": "response.output_audio_transcript.done", **base, "transcript": "bench audio"})
        self._send({"type": "response.done", "response": {
            "id": response_id, "object": "realtime.response", "status": status, "output": [],
            "metadata": self.metadata, "usage": None}})
        self.response_id = None
        scenario = self.gen.scenario
        if status == "completed":
            # A burst is heard over response_ms of real time; the caller talks after it has played.
            wait_ms = scenario.idle_before_speech_ms + (scenario.response_ms if scenario.burst else 0)
            self._later(wait_ms / 1000, self._idle_speech)
        elif scenario.barge_in_by == "key":
            # The bridge sends the digits, then its own response.create: nothing to script until then.
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        else:
            self._later(scenario.speech_ms / 1000, self._speech_stopped)

    def _idle_speech(self) -> None:
        if self.quiet:
            return
        # The caller talks after the agent finished: the bridge sends a clear, but nothing to cancel.
        self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                    "item_id": f"user_{self.index}_{self.responses}"})
        self._later(self.gen.scenario.speech_ms / 1000, self._speech_stopped)

    def _speech_stopped(self) -> None:
        user_item = f"user_{self.index}_{self.responses}"
        self._send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": user_item})
        self._send({"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": user_item})
        self._later(self.gen.scenario.think_ms / 1000, self._server_response)

    def _server_response(self) -> None:
        self.timer = None
        if self.response_id is None and not self.closed and not self.quiet:
            self._start_response(None)  # server VAD's create_response: no client metadata


# --------------------------------------------------------------------------- fake caller
class FakeCaller(WSListener):
    """One Twilio Media Stream: connected, start, a media frame every 20 ms, marks echoed when played."""

    def __init__(self, gen: LoadGenerator, index: int, call_sid: str, stream_sid: str,
                 custom_parameters: dict[str, str]) -> None:
        super().__init__()
        self.gen = gen
        self.index = index
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.custom_parameters = custom_parameters
        self.loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.session: FakeModelSession | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.sequence = 0
        self.chunk = 0
        self.t0 = 0.0
        self.start_sent_ns = 0
        self.first_media_ns = 0
        self.play_end = 0.0  # loop time at which everything received so far has played
        self.pending_marks: list[tuple[float, str]] = []
        self.max_lead_ms = 0.0
        self.cleared_ms: list[float] = []  # unplayed audio thrown away by each clear
        self.media_received = 0
        self.last_media_ns = 0
        self.closed = False
        self.hung_up = False
        self.sends_marks = True

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is None or self.closed:
            return
        self.transport.send(WSMsgType.TEXT, orjson.dumps(message))

    def _next_sequence(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.start_sent_ns = now_ns()
        self._send({"event": "start", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                    "start": {"accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": self.call_sid,
                              "tracks": ["inbound"], "customParameters": self.custom_parameters,
                              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.t0 = self.loop.time()
        self.play_end = self.t0
        self._tick()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.hung_up:
            self.gen.samples.count("calls_dropped_by_server")
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()

    def _tick(self) -> None:
        self.timer = None
        if self.closed or self.hung_up:
            return
        now = self.loop.time()
        due = int((now - self.t0) * 1000 // FRAME_MS) + 1
        while self.chunk < due:
            self.chunk += 1
            payload = unique_payload(b"C", self.index, self.chunk)
            sent_ns = now_ns()
            self.gen.caller_payloads[payload] = (self, sent_ns)
            if self.gen.samples.in_window(sent_ns):
                self.gen.samples.count("up_sent")
            self._send({"event": "media", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                        "media": {"track": "inbound", "chunk": str(self.chunk),
                                  "timestamp": str((self.chunk - 1) * FRAME_MS), "payload": payload}})
        # Twilio echoes a mark once the audio sent before it has played.
        marks = self.pending_marks
        while marks and marks[0][0] <= now:
            _, name = marks.pop(0)
            self._send({"event": "mark", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                        "mark": {"name": name}})
        self.timer = self.loop.call_at(self.t0 + self.chunk * FRAME_MS / 1000, self._tick)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        received_ns = now_ns()
        if frame.msg_type == WSMsgType.CLOSE:
            _close_on_peer_close(transport, frame)
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        if not frame.fin:
            self.gen.samples.count("fragmented_frames")
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        event = message.get("event")
        if event == "media":
            payload = message["media"]["payload"]
            now = self.loop.time()
            self.play_end = max(self.play_end, now) + (len(payload) * 3 // 4) / 8000
            lead_ms = (self.play_end - now) * 1000
            if lead_ms > self.max_lead_ms:
                self.max_lead_ms = lead_ms
            self.media_received += 1
            self.last_media_ns = received_ns
            if self.first_media_ns == 0:
                self.first_media_ns = received_ns
            entry = self.gen.model_payloads.pop(payload, None)
            if entry is None:
                self.gen.samples.count("unknown_media")
                return
            setup_ns = self.gen.scenario.setup_window_ms * 1_000_000
            kind = "down_setup" if setup_ns and entry[1] < self.start_sent_ns + setup_ns else "down"
            self.gen.samples.add(kind, entry[1], received_ns)
        elif event == "mark":
            self.pending_marks.append((self.play_end, message["mark"]["name"]))
        elif event == "clear":
            now = self.loop.time()
            self.cleared_ms.append(max(0.0, self.play_end - now) * 1000)
            self.play_end = now
            for _, name in self.pending_marks:  # a clear echoes every pending mark at once
                self._send({"event": "mark", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                            "mark": {"name": name}})
            self.pending_marks.clear()
            session = self.session
            if session is not None and session.awaiting_clear:
                session.awaiting_clear = False
                self.gen.samples.add("barge_clear", session.barge_in_ns, received_ns)

    def press(self, key: str) -> None:
        """One key, as Twilio reports it: a `dtmf` message (no tone in the audio: the frames are unique payloads)."""
        self._send({"event": "dtmf", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                    "dtmf": {"track": "inbound_track", "digit": key}})

    def hang_up(self) -> None:
        if self.closed or self.hung_up:
            return
        self._send({"event": "stop", "sequenceNumber": self._next_sequence(), "streamSid": self.stream_sid,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}})
        self.hung_up = True
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.send_close(1000)


async def connect_caller(gen: LoadGenerator, url: str, caller: FakeCaller, headers: dict[str, str]) -> None:
    gen.callers.append(caller)
    await ws_connect(lambda: caller, url, extra_headers=headers, websocket_handshake_timeout=10)


class LoopLag:
    """Measures how late this process's event loop runs a 10 ms timer (the load generator's own delay)."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples
        self.loop = asyncio.get_running_loop()
        self.period_s = 0.010
        self.handle: asyncio.TimerHandle | None = None
        self.due = self.loop.time() + self.period_s
        self.handle = self.loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        lag_ns = int((self.loop.time() - self.due) * 1e9)
        t = now_ns()
        self.samples.add("loadgen_lag", t - lag_ns, t)
        self.due += self.period_s
        self.handle = self.loop.call_at(self.due, self._tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system

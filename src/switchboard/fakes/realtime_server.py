"""A fake OpenAI Realtime server speaking the GA WebSocket protocol on 127.0.0.1, for tests and demos.

It validates every client event against the `openai` SDK's GA types (unknown fields included), records
what it received, answers the way the real service does (protocols.md §1.5-§1.11) and streams scripted
responses faster than real time. It owns no state outside its `async with` block: each connection's tasks
live in that connection's TaskGroup and end with it.

    async with FakeRealtimeServer(api_key="sk-test") as server:
        server.on("response.create", stream_audio(ms=800, transcript="Hi there."))
        ...  # point the code under test at server.base_ws_url
        session = await server.wait_for_session()
        await session.wait_for_event("session.update")
        await session.speech_started()
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import http
import inspect
import json
import math
import sys
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import pydantic
from openai.types.realtime import RealtimeClientEvent
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from switchboard.openai_models import DEFAULT_REALTIME_MODEL
from switchboard.simulator.speech import (
    MULAW_BYTES_PER_MS,
    mulaw_to_pcm16,
    pcm16_to_mulaw,
    resample_pcm16,
    rms,
    synthesize_mulaw,
    tone_pcm16,
)

__all__ = [
    "AudioReply",
    "ClientEventRejected",
    "FakeRealtimeServer",
    "FakeRealtimeSession",
    "FakeResponse",
    "FunctionCallReply",
    "ResponseScript",
    "function_call",
    "sequence",
    "stream_audio",
]

JsonDict: TypeAlias = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------
# Client-event validation against the SDK's GA types.

_EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(RealtimeClientEvent)[0])
}
_ADAPTERS = {name: pydantic.TypeAdapter(model) for name, model in _EVENT_MODELS.items()}


@dataclass(frozen=True, slots=True)
class ClientEventRejected:
    """A client event the fake refused because it breaks the GA schema (what the real API rejects too)."""

    code: str
    message: str
    param: str | None
    event: Any


def _validate_client_event(text: str) -> JsonDict | ClientEventRejected:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return ClientEventRejected("invalid_json", f"Invalid JSON: {exc}", None, text)
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return ClientEventRejected("missing_required_parameter", "Missing required parameter: 'type'.",
                                   "type", raw)
    adapter = _ADAPTERS.get(raw["type"])
    if adapter is None:
        supported = ", ".join(f"'{name}'" for name in sorted(_ADAPTERS))
        return ClientEventRejected("invalid_value",
                                   f"Invalid value: '{raw['type']}'. Supported values are: {supported}.",
                                   "type", raw)
    try:
        model = adapter.validate_json(text, strict=True)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        # Union members show up in the location by class name; the API reports only field names.
        param = ".".join(str(part) for part in first["loc"]
                         if not (isinstance(part, str) and (part[:1].isupper() or "[" in part)))
        if first["type"] == "missing":
            return ClientEventRejected("missing_required_parameter",
                                       f"Missing required parameter: '{param}'.", param, raw)
        return ClientEventRejected("invalid_value", f"Invalid value for '{param}': {first['msg']}.", param, raw)
    unknown = _unknown_fields(model, "")
    if unknown:
        return ClientEventRejected("unknown_parameter", f"Unknown parameter: '{unknown[0]}'.", unknown[0], raw)
    return raw


def _unknown_fields(value: object, path: str) -> list[str]:
    """Paths of fields the SDK models accepted only as extras (the SDK allows extras; the API does not)."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found.extend(f"{path}{name}" for name in (value.model_extra or {}))
        for name in type(value).model_fields:
            found.extend(_unknown_fields(getattr(value, name), f"{path}{name}."))
    elif isinstance(value, list | tuple):
        for index, element in enumerate(value):
            found.extend(_unknown_fields(element, f"{path[:-1]}[{index}]."))
    return found


# ---------------------------------------------------------------------------------------------------------
# Response scripts.


@dataclass(frozen=True, slots=True)
class AudioReply:
    """An assistant message with audio and its transcript. `mulaw` overrides the generated tone."""

    duration_ms: int
    transcript: str
    mulaw: bytes | None = None


@dataclass(frozen=True, slots=True)
class FunctionCallReply:
    name: str
    arguments: JsonDict
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseScript:
    """What one response contains, in output order. `delay_s` is the model's thinking time before output.

    Scripts add up: `function_call("lookup", {...}) + stream_audio(ms=500)` is one response with two outputs.
    """

    outputs: tuple[AudioReply | FunctionCallReply, ...]
    delay_s: float = 0.0

    def __add__(self, other: ResponseScript) -> ResponseScript:
        return ResponseScript(self.outputs + other.outputs, self.delay_s + other.delay_s)


def stream_audio(ms: int = 800, transcript: str = "This is the fake model speaking.", *,
                 mulaw: bytes | None = None, delay_s: float = 0.0) -> ResponseScript:
    """A response with one assistant audio message of `ms` milliseconds (or exactly `mulaw`, if given)."""
    duration_ms = len(mulaw) // MULAW_BYTES_PER_MS if mulaw is not None else ms
    return ResponseScript((AudioReply(duration_ms, transcript, mulaw),), delay_s)


def function_call(name: str, arguments: JsonDict, *, call_id: str | None = None,
                  delay_s: float = 0.0) -> ResponseScript:
    """A response with one `function_call` output item; `arguments` is sent as a JSON string."""
    return ResponseScript((FunctionCallReply(name, arguments, call_id),), delay_s)


ResponseHandler: TypeAlias = Callable[
    ["FakeRealtimeSession", "JsonDict | None"], "ResponseScript | Awaitable[ResponseScript]"
]
EventObserver: TypeAlias = Callable[["FakeRealtimeSession", JsonDict], "None | Awaitable[None]"]


def sequence(*scripts: ResponseScript) -> ResponseHandler:
    """A response handler that plays `scripts` in order, one per response, then repeats the last one.

    The count is per session, so a reconnect starts again from the first script.
    """
    if not scripts:
        raise ValueError("sequence() needs at least one script")

    def handler(session: FakeRealtimeSession, request: JsonDict | None) -> ResponseScript:
        return scripts[min(len(session.responses) - 1, len(scripts) - 1)]

    return handler


DEFAULT_SCRIPT = stream_audio(ms=800, transcript="This is the fake model speaking.")

# ---------------------------------------------------------------------------------------------------------
# Sessions.


class FakeResponse:
    """One response as the fake produced it: what was streamed, and how it ended."""

    def __init__(self, response_id: str, request: JsonDict | None, *, in_conversation: bool) -> None:
        self.response_id = response_id
        self.request = request
        """The `response.create` event that asked for it; None for a VAD-initiated (server) response."""
        self.in_conversation = in_conversation
        self.status = "in_progress"
        self.status_reason: str | None = None
        self.item_ids: list[str] = []
        self.audio_deltas: list[str] = []
        """Base64 payloads of every `response.output_audio.delta`, in order."""
        self.audio_ms = 0.0
        self.output: list[JsonDict] = []
        self._cancel_reason: str | None = None
        self._cancel_requested = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def is_done(self) -> bool:
        return self._done.is_set()

    async def wait_for_done(self, timeout_s: float = 2.0) -> str:
        """Wait for `response.done` to have been sent; returns the final status."""
        async with asyncio.timeout(timeout_s):
            await self._done.wait()
        return self.status


class _ResponseCancelled(Exception):
    pass


@dataclass(slots=True)
class _Item:
    item: JsonDict
    audio: bytearray = field(default_factory=bytearray)
    bytes_per_ms: int = MULAW_BYTES_PER_MS

    @property
    def audio_ms(self) -> float:
        return len(self.audio) / self.bytes_per_ms


def _bytes_per_ms(audio_format: JsonDict | None) -> int:
    if audio_format and audio_format.get("type") == "audio/pcm":
        return 48  # 24 kHz, 16-bit
    return MULAW_BYTES_PER_MS if audio_format else 48


def _default_session(session_id: str, model: str) -> JsonDict:
    return {
        "id": session_id,
        "object": "realtime.session",
        "type": "realtime",
        "model": model,
        "expires_at": 1_900_000_000,
        "output_modalities": ["audio"],
        "instructions": "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24_000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                    "silence_duration_ms": 200, "idle_timeout_ms": None,
                    "create_response": True, "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24_000}, "voice": "alloy", "speed": 1.0},
        },
    }


def _merge_session(current: JsonDict, update: JsonDict) -> JsonDict:
    """GA session.update semantics: present fields change, `audio`/`input`/`output` merge, the rest replace."""
    merged = dict(current)
    for key, value in update.items():
        if key in ("audio", "input", "output") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_session(merged[key], value)
        elif key != "model":
            merged[key] = value
    return merged


def _words_in_chunks(text: str, chunks: int) -> list[str]:
    words = text.split(" ")
    if chunks <= 0:
        return []
    pieces = []
    for k in range(chunks):
        group = words[k * len(words) // chunks : (k + 1) * len(words) // chunks]
        pieces.append((" " if k and group else "") + " ".join(group))
    return pieces


class FakeRealtimeSession:
    """The server side of one Realtime WebSocket connection: state, records and test controls.

    Records (read them in tests): `received` (valid client events, raw dicts, in order), `sent` (every server
    event), `protocol_errors` (schema violations, should stay empty), `errors_sent` (every `error` event),
    `responses`, `config` (the effective session), `input_audio` (all appended audio bytes).
    """

    def __init__(self, server: FakeRealtimeServer, connection: ServerConnection, index: int,
                 model: str) -> None:
        self.server = server
        self.index = index
        self.model = model
        self.request_headers: dict[str, str] = dict(connection.request.headers) if connection.request else {}
        self._connection = connection
        self._counter = 0
        self.session_id = self._new_id("sess")
        self.config: JsonDict = _default_session(self.session_id, model)
        self.received: list[JsonDict] = []
        self.sent: list[JsonDict] = []
        self.protocol_errors: list[ClientEventRejected] = []
        self.errors_sent: list[JsonDict] = []
        self.responses: list[FakeResponse] = []
        self.input_audio = bytearray()
        self.append_count = 0
        self.input_audio_ms = 0.0
        self._buffer_start_ms = 0.0
        self._buffer_start_byte = 0
        self._items: dict[str, _Item] = {}
        self._item_order: list[str] = []
        self._active: FakeResponse | None = None
        self._response_tasks: list[asyncio.Task[None]] = []
        self._speech_item_id: str | None = None
        self._handlers: dict[str, ResponseHandler | ResponseScript | EventObserver] = {}
        self._changed = asyncio.Condition()
        self._not_stalled = asyncio.Event()
        self._not_stalled.set()
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._conversation_id = self._new_id("conv")
        # Energy VAD state (only used when the server runs with energy_vad=True).
        self._vad_pending = bytearray()
        self._vad_loud_ms = 0
        self._vad_quiet_ms = 0
        self._vad_speaking = False

    # -- public controls --------------------------------------------------------------------------------

    def on(self, event_type: str, handler: ResponseHandler | ResponseScript | EventObserver) -> None:
        """Override the server-wide handler for this session only (see `FakeRealtimeServer.on`)."""
        self._handlers[event_type] = handler

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def appended_audio_ms(self) -> int:
        return int(self.input_audio_ms)

    @property
    def active_response(self) -> FakeResponse | None:
        return self._active

    @property
    def item_ids(self) -> list[str]:
        """Conversation item ids in conversation order."""
        return list(self._item_order)

    def conversation_item(self, item_id: str) -> JsonDict:
        """The item as `conversation.item.retrieved` would show it (audio included, base64).

        Raises:
            KeyError: no such item in the conversation.
        """
        return self._item_with_audio(self._items[item_id])

    def item_audio_ms(self, item_id: str) -> float:
        return self._items[item_id].audio_ms

    def stall(self, stalled: bool = True) -> None:
        """Stop answering (events are still recorded, replies and streaming wait) until `stall(False)`."""
        if stalled:
            self._not_stalled.clear()
        else:
            self._not_stalled.set()

    async def speech_started(self, *, audio_start_ms: int | None = None) -> str:
        """Send `input_audio_buffer.speech_started` as server VAD would; returns the future user item id.

        With `interrupt_response` on (the default) an active response is cancelled (reason `turn_detected`),
        and `response.done` is sent before this returns.
        """
        item_id = self._new_id("item")
        self._speech_item_id = item_id
        turn_detection = self._turn_detection()
        if audio_start_ms is None:
            padding_ms = int((turn_detection or {}).get("prefix_padding_ms") or 300)
            audio_start_ms = max(int(self._buffer_start_ms), self.appended_audio_ms - padding_ms)
        await self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms,
                          "item_id": item_id})
        if turn_detection is not None and turn_detection.get("interrupt_response", True) and self._active:
            await self._cancel_active("turn_detected")
        return item_id

    async def speech_stopped(self, *, audio_end_ms: int | None = None, transcript: str | None = None) -> str:
        """Send `speech_stopped`; with turn detection on, also commit and (if `create_response`) respond.

        Returns the user item id. `transcript` is used for the input transcription events when the session
        has `audio.input.transcription` configured.
        """
        item_id = self._speech_item_id or self._new_id("item")
        self._speech_item_id = None
        await self._send({"type": "input_audio_buffer.speech_stopped",
                          "audio_end_ms": self.appended_audio_ms if audio_end_ms is None else audio_end_ms,
                          "item_id": item_id})
        turn_detection = self._turn_detection()
        if turn_detection is not None:
            await self.commit(item_id=item_id, transcript=transcript)
            if turn_detection.get("create_response", True):
                if self._active is not None:
                    await self._send_error(
                        "conversation_already_has_active_response",
                        f"Conversation already has an active response in progress: "
                        f"{self._active.response_id}. Wait until the response is finished before "
                        f"creating a new one.", None)
                else:
                    await self.start_response()
        return item_id

    async def commit(self, *, item_id: str | None = None, transcript: str | None = None) -> str:
        """Commit the input buffer: `input_audio_buffer.committed`, then the user item added/done."""
        item_id = item_id or self._new_id("item")
        previous = self._item_order[-1] if self._item_order else None
        audio = bytes(self.input_audio[self._buffer_start_byte :])
        self._buffer_start_byte = len(self.input_audio)
        self._buffer_start_ms = self.input_audio_ms
        item: JsonDict = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
                "status": "completed", "content": [{"type": "input_audio", "transcript": None}]}
        entry = _Item(item, bytearray(audio), _bytes_per_ms(self._input_format()))
        self._add_item(item_id, entry, previous)
        await self._send({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                          "item_id": item_id})
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        if self.config["audio"]["input"].get("transcription"):
            text = transcript if transcript is not None else f"[caller speech, {int(entry.audio_ms)} ms]"
            await self._send({"type": "conversation.item.input_audio_transcription.delta",
                              "item_id": item_id, "content_index": 0, "delta": text})
            item["content"][0]["transcript"] = text
            await self._send({"type": "conversation.item.input_audio_transcription.completed",
                              "item_id": item_id, "content_index": 0, "transcript": text,
                              "usage": {"type": "duration", "seconds": round(entry.audio_ms / 1000, 3)}})
        return item_id

    async def start_response(self, script: ResponseScript | None = None) -> FakeResponse:
        """Start a server-initiated response (as VAD's `create_response` does) from `script` or the handler.

        Raises:
            RuntimeError: a response is already active (the real server never does that).
        """
        if self._active is not None:
            raise RuntimeError(f"response {self._active.response_id} is still active")
        return await self._start_response(None, script)

    async def send_error(self, code: str | None, message: str, type: str = "invalid_request_error",
                         *, param: str | None = None, event_id: str | None = None) -> None:
        await self._send_error(code, message, event_id, error_type=type, param=param)

    async def send_raw(self, message: JsonDict | str) -> None:
        """Send anything, as is (a dict is JSON-encoded; no event_id is added)."""
        text = message if isinstance(message, str) else json.dumps(message)
        async with self._send_lock:
            await self._connection.send(text)

    async def drop(self) -> None:
        """Abort the TCP connection without a close frame (the client sees close code 1006)."""
        transport = self._connection.transport
        transport.abort()
        await self.wait_for_closed()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)

    async def wait_for_closed(self, timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._closed.wait()

    async def wait_for_event(self, type: str, *, timeout_s: float = 2.0,
                             predicate: Callable[[JsonDict], bool] | None = None,
                             after_index: int = 0) -> JsonDict:
        """The first valid client event of `type` at or after `received[after_index]` matching `predicate`.

        Raises:
            TimeoutError: none arrived within `timeout_s`.
        """
        return await self._wait_in(self.received, type, timeout_s, predicate, after_index)

    async def wait_for_sent(self, type: str, *, timeout_s: float = 2.0,
                            predicate: Callable[[JsonDict], bool] | None = None,
                            after_index: int = 0) -> JsonDict:
        """Like `wait_for_event`, over the server events this fake has sent."""
        return await self._wait_in(self.sent, type, timeout_s, predicate, after_index)

    def events_of(self, type: str) -> list[JsonDict]:
        return [event for event in self.received if event["type"] == type]

    # -- connection lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                try:
                    if self._connection.request and "OpenAI-Beta" in self._connection.request.headers:
                        await self._send_error(
                            "beta_api_shape_disabled",
                            "The Realtime Beta API is no longer supported. Please use /v1/realtime for "
                            "the GA API.", None)
                        await self._connection.close(4000, "beta api shape disabled")
                        return
                    if self.server.session_created_delay_s:
                        await asyncio.sleep(self.server.session_created_delay_s)
                    await self._send({"type": "session.created", "session": self.config})
                    async for message in self._connection:
                        await self._receive(message)
                except ConnectionClosed:
                    pass
                finally:
                    for task in self._response_tasks:
                        task.cancel()
        finally:
            self._closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _receive(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            result: JsonDict | ClientEventRejected = ClientEventRejected(
                "invalid_request_error", "Binary frames are not supported; send JSON text frames.", None,
                message)
        else:
            result = _validate_client_event(message)
        if isinstance(result, ClientEventRejected):
            self.protocol_errors.append(result)
            event_id = result.event.get("event_id") if isinstance(result.event, dict) else None
            await self._send_error(result.code, result.message, event_id, param=result.param)
            return
        self.received.append(result)
        async with self._changed:
            self._changed.notify_all()
        await self._not_stalled.wait()
        await self._dispatch(result)

    async def _dispatch(self, event: JsonDict) -> None:
        kind = event["type"]
        event_id = event.get("event_id")
        if kind == "session.update":
            await self._on_session_update(event, event_id)
        elif kind == "input_audio_buffer.append":
            await self._on_append(event, event_id)
        elif kind == "input_audio_buffer.commit":
            buffered_ms = self.input_audio_ms - self._buffer_start_ms
            if buffered_ms < 100:
                await self._send_error(
                    "input_audio_buffer_commit_empty",
                    f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                    f"audio, but buffer only has {buffered_ms:.2f}ms of audio.", event_id)
            else:
                await self.commit(item_id=self._speech_item_id)
                self._speech_item_id = None
        elif kind == "input_audio_buffer.clear":
            self._buffer_start_byte = len(self.input_audio)
            self._buffer_start_ms = self.input_audio_ms
            await self._send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            await self._on_item_create(event, event_id)
        elif kind == "conversation.item.retrieve":
            entry = self._items.get(event["item_id"])
            if entry is None:
                await self._item_not_found(event["item_id"], event_id)
            else:
                await self._send({"type": "conversation.item.retrieved", "item": self._item_with_audio(entry)})
        elif kind == "conversation.item.truncate":
            await self._on_truncate(event, event_id)
        elif kind == "conversation.item.delete":
            if event["item_id"] not in self._items:
                await self._item_not_found(event["item_id"], event_id)
            else:
                del self._items[event["item_id"]]
                self._item_order.remove(event["item_id"])
                await self._send({"type": "conversation.item.deleted", "item_id": event["item_id"]})
        elif kind == "response.create":
            await self._on_response_create(event, event_id)
        elif kind == "response.cancel":
            active = self._active
            wanted = event.get("response_id")
            if active is None or (wanted is not None and wanted != active.response_id):
                await self._send_error("response_cancel_not_active",
                                       "Cancellation failed: no active response found.", event_id)
            else:
                await self._cancel_active("client_cancelled")
        elif kind == "output_audio_buffer.clear":
            rejected = ClientEventRejected(
                "invalid_value", "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.",
                "type", event)
            self.protocol_errors.append(rejected)
            await self._send_error(rejected.code, rejected.message, event_id, param="type")
        observer = self._handler_for(kind)
        if observer is not None and kind != "response.create":
            outcome = typing.cast(EventObserver, observer)(self, event)
            if inspect.isawaitable(outcome):
                await outcome

    async def _on_session_update(self, event: JsonDict, event_id: str | None) -> None:
        update = event["session"]
        if update.get("type") != "realtime":
            await self._send_error("invalid_value", "This fake only supports session.type 'realtime'.",
                                   event_id, param="session.type")
            return
        modalities = update.get("output_modalities")
        if modalities is not None and len(modalities) != 1:
            await self._send_error("invalid_value",
                                   "Invalid modalities: ['audio', 'text']. Supported combinations are: "
                                   "['text'] and ['audio'].", event_id, param="session.output_modalities")
            return
        self.config = _merge_session(self.config, update)
        await self._send({"type": "session.updated", "session": self.config})

    async def _on_append(self, event: JsonDict, event_id: str | None) -> None:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            rejected = ClientEventRejected("invalid_value", "Invalid 'audio'. Expected base64-encoded audio.",
                                           "audio", event)
            self.protocol_errors.append(rejected)
            await self._send_error(rejected.code, rejected.message, event_id, param="audio")
            return
        self.input_audio.extend(audio)
        self.append_count += 1
        self.input_audio_ms += len(audio) / _bytes_per_ms(self._input_format())
        if self.server.energy_vad and self._turn_detection() is not None:
            await self._feed_energy_vad(audio)

    async def _on_item_create(self, event: JsonDict, event_id: str | None) -> None:
        item = dict(event["item"])
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            await self._item_not_found(previous, event_id, param="previous_item_id")
            return
        if item.get("type") == "function_call_output":
            known_calls = {e.item.get("call_id") for e in self._items.values()
                           if e.item.get("type") == "function_call"}
            if item.get("call_id") not in known_calls:
                await self._send_error(
                    "invalid_value", f"No function call found with call_id '{item.get('call_id')}'.",
                    event_id, param="item.call_id")
                return
        if item.get("role") == "assistant" and any(
                part.get("type") == "output_audio" for part in item.get("content", [])):
            await self._send_error("invalid_value", "Assistant messages cannot contain audio content.",
                                   event_id, param="item.content")
            return
        item_id = item.get("id") or self._new_id("item")
        item.update(id=item_id, object="realtime.item", status="completed")
        entry = _Item(item)
        for part in item.get("content", []):
            if part.get("type") == "input_audio" and part.get("audio"):
                entry.audio.extend(base64.b64decode(part["audio"]))
                entry.bytes_per_ms = _bytes_per_ms(self._input_format())
        if previous is None:
            previous = self._item_order[-1] if self._item_order else None
        self._add_item(item_id, entry, None if previous == "root" else previous, first=previous == "root")
        shown = self._item_without_audio(item)
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": shown})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": shown})

    async def _on_truncate(self, event: JsonDict, event_id: str | None) -> None:
        entry = self._items.get(event["item_id"])
        if entry is None:
            await self._item_not_found(event["item_id"], event_id)
            return
        if entry.item.get("role") != "assistant" or entry.item.get("type") != "message":
            await self._send_error("invalid_value", "Only assistant messages can be truncated.", event_id,
                                   param="item_id")
            return
        if event["content_index"] != 0:
            await self._send_error("invalid_value", f"Invalid content_index: {event['content_index']}.",
                                   event_id, param="content_index")
            return
        audio_end_ms = event["audio_end_ms"]
        if audio_end_ms < 0 or audio_end_ms > entry.audio_ms:
            await self._send_error(
                "invalid_value",
                f"Audio content of {int(entry.audio_ms)}ms is already shorter than {audio_end_ms}ms",
                event_id, param="audio_end_ms")
            return
        del entry.audio[audio_end_ms * entry.bytes_per_ms :]
        for part in entry.item.get("content", []):
            # The API drops the transcript of a truncated item: it can't align text to the audio cut.
            if part.get("type") == "output_audio":
                part["transcript"] = None
        entry.item["truncated_at_ms"] = audio_end_ms
        await self._send({"type": "conversation.item.truncated", "item_id": event["item_id"],
                          "content_index": 0, "audio_end_ms": audio_end_ms})

    async def _on_response_create(self, event: JsonDict, event_id: str | None) -> None:
        params = event.get("response") or {}
        in_conversation = params.get("conversation", "auto") != "none"
        if in_conversation and self._active is not None:
            await self._send_error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._active.response_id}. "
                "Wait until the response is finished before creating a new one.", event_id)
            return
        await self._start_response(event, None)

    # -- responses ---------------------------------------------------------------------------------------

    async def _start_response(self, request: JsonDict | None, script: ResponseScript | None) -> FakeResponse:
        params = (request or {}).get("response") or {}
        in_conversation = params.get("conversation", "auto") != "none"
        response = FakeResponse(self._new_id("resp"), request, in_conversation=in_conversation)
        self.responses.append(response)
        if script is None:
            script = await self._script_for(request)
        if in_conversation:
            self._active = response
        assert self._tasks is not None, "session not running"
        task = self._tasks.create_task(self._run_response(response, script),
                                       name=f"fake-realtime-{response.response_id}")
        self._response_tasks.append(task)
        task.add_done_callback(self._response_tasks.remove)
        return response

    async def _script_for(self, request: JsonDict | None) -> ResponseScript:
        handler = self._handler_for("response.create")
        if handler is None:
            return self.server.default_script
        if isinstance(handler, ResponseScript):
            return handler
        outcome = typing.cast(ResponseHandler, handler)(self, request)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if not isinstance(outcome, ResponseScript):
            raise TypeError(f"response handler returned {outcome!r}, not a ResponseScript")
        return outcome

    def _response_object(self, response: FakeResponse, status: str) -> JsonDict:
        params = (response.request or {}).get("response") or {}
        output_config = self.config["audio"]["output"]
        return {
            "id": response.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": [],
            "conversation_id": self._conversation_id if response.in_conversation else None,
            "output_modalities": params.get("output_modalities", self.config["output_modalities"]),
            "max_output_tokens": params.get("max_output_tokens", self.config["max_output_tokens"]),
            "audio": {"output": {"format": output_config["format"], "voice": output_config["voice"]}},
            "usage": None,
            "metadata": params.get("metadata"),
        }

    async def _run_response(self, response: FakeResponse, script: ResponseScript) -> None:
        outputs_open: list[tuple[int, JsonDict, str]] = []
        try:
            try:
                await self._send({"type": "response.created",
                                  "response": self._response_object(response, "in_progress")})
                await self._pause(response, script.delay_s)
                for output_index, output in enumerate(script.outputs):
                    if isinstance(output, AudioReply):
                        await self._stream_message(response, output_index, output, outputs_open)
                    else:
                        await self._stream_function_call(response, output_index, output)
                await self._finish_response(response, "completed", None)
            except _ResponseCancelled:
                for output_index, item, transcript in outputs_open:
                    await self._close_cancelled_message(response, output_index, item, transcript)
                await self._finish_response(response, "cancelled", response._cancel_reason)
        except ConnectionClosed:
            response.status = "cancelled"
            response.status_reason = "connection_closed"
        finally:
            if self._active is response:
                self._active = None
            response._done.set()

    async def _pause(self, response: FakeResponse, seconds: float) -> None:
        """Wait `seconds` (and while stalled); raise `_ResponseCancelled` when a cancel arrives meanwhile."""
        if response._cancel_requested.is_set():
            raise _ResponseCancelled
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await response._cancel_requested.wait()
        await self._not_stalled.wait()
        if response._cancel_requested.is_set():
            raise _ResponseCancelled

    def _audio_chunks(self, response: FakeResponse, reply: AudioReply) -> list[bytes]:
        output_format = self.config["audio"]["output"]["format"]
        bytes_per_ms = _bytes_per_ms(output_format)
        chunk_ms = self.server.audio_ms_per_delta
        if reply.mulaw is not None:
            audio = reply.mulaw
            if bytes_per_ms != MULAW_BYTES_PER_MS:
                audio = _pcm24k_bytes(resample_pcm16(mulaw_to_pcm16(reply.mulaw), 8_000, 24_000))
        else:
            audio = b""
        chunks: list[bytes] = []
        ordinal = len(self.responses)
        total_ms = reply.duration_ms
        # Counted over the whole response, so the deltas of its second item differ from its first's.
        for index, start_ms in enumerate(range(0, total_ms, chunk_ms), start=len(response.audio_deltas)):
            length_ms = min(chunk_ms, total_ms - start_ms)
            if reply.mulaw is not None:
                chunks.append(audio[start_ms * bytes_per_ms : (start_ms + length_ms) * bytes_per_ms])
                continue
            # Distinct, deterministic content per delta: the pitch steps with the delta index and the
            # loudness with the response, so tests can tell deltas (and responses) apart, and from silence.
            frequency_hz = 300.0 + 10.0 * (index % 300)
            amplitude = 3_000 + 700 * (ordinal % 8)
            if bytes_per_ms == MULAW_BYTES_PER_MS:
                chunks.append(pcm16_to_mulaw(tone_pcm16(length_ms, frequency_hz=frequency_hz,
                                                        amplitude=amplitude)))
            else:
                chunks.append(_pcm24k_bytes(tone_pcm16(length_ms, frequency_hz=frequency_hz,
                                                       amplitude=amplitude, sample_rate_hz=24_000)))
        return chunks

    async def _stream_message(self, response: FakeResponse, output_index: int, reply: AudioReply,
                              outputs_open: list[tuple[int, JsonDict, str]]) -> None:
        params = (response.request or {}).get("response") or {}
        modalities = params.get("output_modalities", self.config["output_modalities"])
        is_audio = modalities == ["audio"]
        item_id = self._new_id("item")
        response.item_ids.append(item_id)
        item: JsonDict = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        ids = {"response_id": response.response_id, "item_id": item_id, "output_index": output_index,
               "content_index": 0}
        entry = _Item(item, bytearray(), _bytes_per_ms(self.config["audio"]["output"]["format"]))
        previous = self._item_order[-1] if self._item_order else None
        if response.in_conversation:
            self._add_item(item_id, entry, previous)
        await self._send({"type": "response.output_item.added", "response_id": response.response_id,
                          "output_index": output_index, "item": dict(item, content=[])})
        await self._send({"type": "conversation.item.added", "previous_item_id": previous,
                          "item": dict(item, content=[])})
        part_type = "audio" if is_audio else "text"
        empty_part = {"type": part_type, "transcript": ""} if is_audio else {"type": "text", "text": ""}
        await self._send({"type": "response.content_part.added", **ids, "part": empty_part})
        if is_audio:
            item["content"] = [{"type": "output_audio", "transcript": ""}]
        else:
            item["content"] = [{"type": "output_text", "text": ""}]
        outputs_open.append((output_index, item, ""))
        chunks = self._audio_chunks(response, reply) if is_audio else [b""] * max(1, len(reply.transcript) // 40)
        words = _words_in_chunks(reply.transcript, len(chunks))
        said = ""
        for index, chunk in enumerate(chunks):
            await self._pause(response, self.server.delta_interval_s if index else 0.0)
            if is_audio:
                payload = base64.b64encode(chunk).decode("ascii")
                entry.audio.extend(chunk)
                response.audio_deltas.append(payload)
                response.audio_ms += len(chunk) / entry.bytes_per_ms
                await self._send({"type": "response.output_audio.delta", **ids, "delta": payload})
            if words[index]:
                said += words[index]
                outputs_open[-1] = (output_index, item, said)
                kind = "response.output_audio_transcript.delta" if is_audio else "response.output_text.delta"
                await self._send({"type": kind, **ids, "delta": words[index]})
        outputs_open.pop()
        if is_audio:
            await self._send({"type": "response.output_audio.done", **ids})
            await self._send({"type": "response.output_audio_transcript.done", **ids,
                              "transcript": reply.transcript})
            part = {"type": "audio", "transcript": reply.transcript}
            item["content"] = [{"type": "output_audio", "transcript": reply.transcript}]
        else:
            await self._send({"type": "response.output_text.done", **ids, "text": reply.transcript})
            part = {"type": "text", "text": reply.transcript}
            item["content"] = [{"type": "output_text", "text": reply.transcript}]
        await self._send({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = "completed"
        response.output.append(item)
        await self._send({"type": "response.output_item.done", "response_id": response.response_id,
                          "output_index": output_index, "item": item})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    async def _close_cancelled_message(self, response: FakeResponse, output_index: int, item: JsonDict,
                                       transcript: str) -> None:
        ids = {"response_id": response.response_id, "item_id": item["id"], "output_index": output_index,
               "content_index": 0}
        is_audio = item["content"][0]["type"] == "output_audio"
        if is_audio:
            await self._send({"type": "response.output_audio.done", **ids})
            await self._send({"type": "response.output_audio_transcript.done", **ids, "transcript": transcript})
            part = {"type": "audio", "transcript": transcript}
            item["content"] = [{"type": "output_audio", "transcript": transcript}]
        else:
            await self._send({"type": "response.output_text.done", **ids, "text": transcript})
            part = {"type": "text", "text": transcript}
            item["content"] = [{"type": "output_text", "text": transcript}]
        await self._send({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = "incomplete"
        response.output.append(item)
        await self._send({"type": "response.output_item.done", "response_id": response.response_id,
                          "output_index": output_index, "item": item})
        await self._send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    async def _stream_function_call(self, response: FakeResponse, output_index: int,
                                    reply: FunctionCallReply) -> None:
        item_id = self._new_id("item")
        call_id = reply.call_id or self._new_id("call")
        response.item_ids.append(item_id)
        arguments = json.dumps(reply.arguments)
        item: JsonDict = {"id": item_id, "object": "realtime.item", "type": "function_call",
                          "status": "in_progress",
                "name": reply.name, "call_id": call_id, "arguments": ""}
        previous = self._item_order[-1] if self._item_order else None
        if response.in_conversation:
            self._add_item(item_id, _Item(item), previous)
        await self._send({"type": "response.output_item.added", "response_id": response.response_id,
                          "output_index": output_index, "item": dict(item)})
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": dict(item)})
        step = max(1, math.ceil(len(arguments) / 4))
        for index, start in enumerate(range(0, len(arguments), step)):
            await self._pause(response, self.server.delta_interval_s if index else 0.0)
            await self._send({"type": "response.function_call_arguments.delta",
                              "response_id": response.response_id, "item_id": item_id,
                              "output_index": output_index, "call_id": call_id,
                              "delta": arguments[start : start + step]})
        await self._send({"type": "response.function_call_arguments.done", "response_id": response.response_id,
                          "item_id": item_id, "output_index": output_index, "call_id": call_id,
                          "name": reply.name, "arguments": arguments})
        item.update(status="completed", arguments=arguments)
        response.output.append(item)
        await self._send({"type": "response.output_item.done", "response_id": response.response_id,
                          "output_index": output_index, "item": item})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    async def _finish_response(self, response: FakeResponse, status: str, reason: str | None) -> None:
        response.status = status
        response.status_reason = reason
        body = self._response_object(response, status)
        if status == "cancelled":
            body["status_details"] = {"type": "cancelled", "reason": reason}
        body["output"] = response.output
        body["usage"] = self._usage(response)
        if self._active is response:
            self._active = None
        await self._send({"type": "response.done", "response": body})
        await self._send({"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 5_000, "remaining": 4_999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40_000, "remaining": 40_000 - body["usage"]["total_tokens"],
             "reset_seconds": 0.42},
        ]})

    def _usage(self, response: FakeResponse) -> JsonDict:
        instructions_tokens = len(str(self.config.get("instructions") or "")) // 4
        input_audio_tokens = int(self.input_audio_ms / 100)
        output_audio_tokens = int(response.audio_ms / 50)
        output_text_tokens = sum(
            len(str(part.get("transcript") or part.get("text") or "").split()) * 4 // 3
            for item in response.output for part in item.get("content", [])
        ) + sum(len(item.get("arguments", "")) // 4 for item in response.output)
        input_tokens = instructions_tokens + input_audio_tokens
        output_tokens = output_audio_tokens + output_text_tokens
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": instructions_tokens, "audio_tokens": input_audio_tokens, "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text_tokens, "audio_tokens": output_audio_tokens},
        }

    async def _cancel_active(self, reason: str) -> None:
        response = self._active
        if response is None:
            return
        response._cancel_reason = reason
        response._cancel_requested.set()
        # The real service sends the cancelled response.done before answering anything else.
        await response._done.wait()

    # -- energy VAD ---------------------------------------------------------------------------------------

    async def _feed_energy_vad(self, audio: bytes) -> None:
        bytes_per_ms = _bytes_per_ms(self._input_format())
        frame_bytes = 20 * bytes_per_ms
        self._vad_pending.extend(audio)
        threshold = self.server.energy_vad_threshold_rms
        while len(self._vad_pending) >= frame_bytes:
            frame = bytes(self._vad_pending[:frame_bytes])
            del self._vad_pending[:frame_bytes]
            if bytes_per_ms == MULAW_BYTES_PER_MS:
                samples: Sequence[int] = mulaw_to_pcm16(frame)
            else:
                samples = _pcm24k_samples(frame)
            is_loud = rms(samples) >= threshold
            turn_detection = self._turn_detection() or {}
            if not self._vad_speaking:
                self._vad_loud_ms = self._vad_loud_ms + 20 if is_loud else 0
                if self._vad_loud_ms >= 60:
                    self._vad_speaking = True
                    self._vad_quiet_ms = 0
                    onset_ms = self.appended_audio_ms - self._vad_loud_ms
                    padding_ms = int(turn_detection.get("prefix_padding_ms") or 300)
                    await self.speech_started(
                        audio_start_ms=max(int(self._buffer_start_ms), onset_ms - padding_ms))
            else:
                self._vad_quiet_ms = 0 if is_loud else self._vad_quiet_ms + 20
                silence_ms = int(turn_detection.get("silence_duration_ms") or 500)
                if self._vad_quiet_ms >= silence_ms:
                    self._vad_speaking = False
                    self._vad_loud_ms = 0
                    await self.speech_stopped(audio_end_ms=self.appended_audio_ms - self._vad_quiet_ms + 100)

    # -- plumbing -------------------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self.index:02d}{self._counter:06d}"

    def _turn_detection(self) -> JsonDict | None:
        turn_detection: JsonDict | None = self.config["audio"]["input"].get("turn_detection")
        return turn_detection

    def _input_format(self) -> JsonDict | None:
        audio_format: JsonDict | None = self.config["audio"]["input"].get("format")
        return audio_format

    def _handler_for(self, event_type: str) -> ResponseHandler | ResponseScript | EventObserver | None:
        return self._handlers.get(event_type) or self.server._handlers.get(event_type)

    def _add_item(self, item_id: str, entry: _Item, previous: str | None, *, first: bool = False) -> None:
        self._items[item_id] = entry
        if first:
            self._item_order.insert(0, item_id)
        elif previous is not None and previous in self._item_order:
            self._item_order.insert(self._item_order.index(previous) + 1, item_id)
        else:
            self._item_order.append(item_id)

    @staticmethod
    def _item_without_audio(item: JsonDict) -> JsonDict:
        shown = dict(item)
        if "content" in item:
            shown["content"] = [{k: v for k, v in part.items() if k != "audio"} for part in item["content"]]
        shown.pop("truncated_at_ms", None)
        return shown

    def _item_with_audio(self, entry: _Item) -> JsonDict:
        shown = self._item_without_audio(entry.item)
        audio = base64.b64encode(bytes(entry.audio)).decode("ascii")
        for part in shown.get("content", []):
            if part.get("type") in ("input_audio", "output_audio"):
                part["audio"] = audio
        return shown

    async def _item_not_found(self, item_id: str, event_id: str | None, *, param: str = "item_id") -> None:
        await self._send_error("item_not_found", f"Item with item_id '{item_id}' not found.", event_id,
                               param=param)

    async def _send_error(self, code: str | None, message: str, event_id: str | None, *,
                          error_type: str = "invalid_request_error", param: str | None = None) -> None:
        event = {"type": "error", "error": {"type": error_type, "code": code, "message": message,
                                            "param": param, "event_id": event_id}}
        self.errors_sent.append(event)
        await self._send(event)

    async def _send(self, event: JsonDict) -> None:
        event = {"event_id": self._new_id("event"), **event}
        self.sent.append(event)
        async with self._changed:
            self._changed.notify_all()
        async with self._send_lock:
            await self._connection.send(json.dumps(event))

    async def _wait_in(self, events: list[JsonDict], type: str, timeout_s: float,
                       predicate: Callable[[JsonDict], bool] | None, after_index: int) -> JsonDict:
        def find() -> JsonDict | None:
            for event in events[after_index:]:
                if event["type"] == type and (predicate is None or predicate(event)):
                    return event
            return None

        async with asyncio.timeout(timeout_s), self._changed:
            while (found := find()) is None:
                await self._changed.wait()
            return found


def _pcm24k_bytes(samples: Sequence[int]) -> bytes:
    from array import array

    pcm = array("h", samples)
    if sys.byteorder == "big":
        pcm.byteswap()
    return pcm.tobytes()


def _pcm24k_samples(frame: bytes) -> Sequence[int]:
    from array import array

    pcm = array("h")
    pcm.frombytes(frame[: len(frame) // 2 * 2])
    if sys.byteorder == "big":
        pcm.byteswap()
    return pcm


# ---------------------------------------------------------------------------------------------------------
# The server.


class FakeRealtimeServer:
    """A Realtime GA WebSocket server on `host:port` (port 0 = pick one); use it as `async with`.

    `api_key`: when set, upgrades without `Authorization: Bearer <api_key>` get HTTP 401.
    `energy_vad`: decode appended audio and run a simple energy VAD (speech after 60 ms above
    `energy_vad_threshold_rms`, end after the session's `silence_duration_ms`), for demos; off by default,
    tests drive turns with `session.speech_started()` / `speech_stopped()`.
    `audio_ms_per_delta` / `delta_interval_s`: response audio is cut in deltas of that many ms, sent that
    far apart (default 100 ms every 10 ms: ten times real time, like the real service).
    `session_created_delay_s`: how long after the upgrade `session.created` comes (a slow session set-up).
    """

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 energy_vad: bool = False, energy_vad_threshold_rms: float = 500.0,
                 audio_ms_per_delta: int = 100, delta_interval_s: float = 0.01,
                 default_script: ResponseScript = DEFAULT_SCRIPT, close_timeout_s: float = 5.0,
                 session_created_delay_s: float = 0.0) -> None:
        self.api_key = api_key
        self.session_created_delay_s = session_created_delay_s
        self.host = host
        self.energy_vad = energy_vad
        self.energy_vad_threshold_rms = energy_vad_threshold_rms
        self.audio_ms_per_delta = audio_ms_per_delta
        self.delta_interval_s = delta_interval_s
        self.default_script = default_script
        self.close_timeout_s = close_timeout_s
        self.sessions: list[FakeRealtimeSession] = []
        self.rejected_upgrades: list[tuple[int, str]] = []
        self._port = port
        self._server: Server | None = None
        self._handlers: dict[str, ResponseHandler | ResponseScript | EventObserver] = {}
        self._sessions_changed = asyncio.Condition()
        self._sessions_handed_out = 0

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRealtimeServer is not running")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def base_ws_url(self) -> str:
        """For `AsyncOpenAI(websocket_base_url=...)`: `ws://127.0.0.1:<port>/v1`."""
        return f"ws://{self.host}:{self.port}/v1"

    @property
    def base_http_url(self) -> str:
        """For `AsyncOpenAI(base_url=...)` (GA `connect()` maps http to ws): `http://127.0.0.1:<port>/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def realtime_url(self) -> str:
        return f"{self.base_ws_url}/realtime"

    # -- scripting --------------------------------------------------------------------------------------------

    def on(self, event_type: str, handler: ResponseHandler | ResponseScript | EventObserver) -> None:
        """Script the fake for every session.

        For `"response.create"`, `handler` is a `ResponseScript` or `handler(session, request) -> script`
        (sync or async; `request` is the client's `response.create` event, None for VAD responses).
        For any other client event type, `handler(session, event)` is called after the fake's own reply.
        """
        self._handlers[event_type] = handler

    async def wait_for_session(self, timeout_s: float = 2.0, *, index: int | None = None) -> FakeRealtimeSession:
        """The session at `index`, or else the next session not yet returned by this method."""
        wanted = self._sessions_handed_out if index is None else index
        async with asyncio.timeout(timeout_s), self._sessions_changed:
            while len(self.sessions) <= wanted:
                await self._sessions_changed.wait()
        if index is None:
            self._sessions_handed_out += 1
        return self.sessions[wanted]

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(self._handle, self.host, self._port, process_request=self._check_upgrade,
                                   max_size=None, compression=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        async with asyncio.timeout(self.close_timeout_s):
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Run until cancelled (for `python -m switchboard.fakes.realtime_server`)."""
        async with self:
            await asyncio.Future()

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != "/v1/realtime":
            self.rejected_upgrades.append((404, request.path))
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not found\n")
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.rejected_upgrades.append((401, request.path))
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, json.dumps({"error": {
                "type": "invalid_request_error", "code": "invalid_api_key",
                "message": "Incorrect API key provided.", "param": None}}))
        query = parse_qs(parts.query)
        if "model" not in query and "call_id" not in query:
            self.rejected_upgrades.append((400, request.path))
            return connection.respond(http.HTTPStatus.BAD_REQUEST, json.dumps({"error": {
                "type": "invalid_request_error", "code": "missing_model",
                "message": "You must provide a model parameter.", "param": "model"}}))
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        model = query.get("model", [DEFAULT_REALTIME_MODEL])[0]
        session = FakeRealtimeSession(self, connection, len(self.sessions), model)
        self.sessions.append(session)
        async with self._sessions_changed:
            self._sessions_changed.notify_all()
        await session.run()


# ---------------------------------------------------------------------------------------------------------
# Demo entry point.

_DEMO_REPLIES = (
    "Sure, I can help with that. Could you give me your order number?",
    "Thanks. Let me check. Your order shipped yesterday and should arrive on Friday.",
    "Is there anything else I can help you with today?",
    "You're welcome. Have a great day!",
)
_DEMO_GREETING = "Hello! Thanks for calling. How can I help you today?"


def demo_reply(session: FakeRealtimeSession, request: JsonDict | None) -> ResponseScript:
    """Canned demo answers: a greeting for the first response, then short replies in turn."""
    if len(session.responses) <= 1 and request is not None:
        text = _DEMO_GREETING
    else:
        spoken_turns = sum(1 for response in session.responses if response.request is None)
        text = _DEMO_REPLIES[(spoken_turns - 1) % len(_DEMO_REPLIES)]
    return stream_audio(transcript=text, mulaw=synthesize_mulaw(text), delay_s=0.3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI Realtime (GA) server for demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--api-key", default=None, help="require this Bearer key on upgrades")
    args = parser.parse_args(argv)

    async def run() -> None:
        server = FakeRealtimeServer(api_key=args.api_key, host=args.host, port=args.port, energy_vad=True)
        server.on("response.create", demo_reply)
        async with server:
            print(f"fake realtime server listening on {server.base_ws_url} (energy VAD on)", flush=True)
            await asyncio.Future()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Realtime GA protocol core for one connection: session config, conversation, input audio, responses.

Pure: no asyncio, no sockets, no models, no clock. `handle(client_event)` returns what to do, in order:
`Send` a server event, `Transcribe` a committed user item, `StartResponse` or `StopResponse`. The
connection adapter performs that work and reports back through `transcription_finished` and the
`response_*` builders, which return the server events to send (event names, shapes and order follow
the OpenAI Realtime GA service).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchboard.engine import brain, g711
from switchboard.engine.vad import FRAME_MS, FrameClassifier, SpeechStarted, SpeechStopped, TurnDetector

AUDIO_DELTA_MS = 100
MIN_COMMIT_MS = 100
ENGINE_MODEL = "switchboard-local-engine"
PCMU = {"type": "audio/pcmu"}


@dataclass(frozen=True, slots=True)
class Send:
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transcribe:
    item_id: str
    mulaw: bytes


@dataclass(frozen=True, slots=True)
class StartResponse:
    response_id: str


@dataclass(frozen=True, slots=True)
class StopResponse:
    response_id: str


Output = Send | Transcribe | StartResponse | StopResponse


class ClientError(Exception):
    """A client event the service would reject; becomes an `error` event (the connection stays open)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(slots=True)
class _Response:
    response_id: str
    instructions: str | None
    tools: list[dict[str, Any]] | None
    output_modalities: list[str]
    metadata: dict[str, Any] | None
    is_out_of_band: bool
    output: list[dict[str, Any]] = field(default_factory=list)
    output_audio_ms: int = 0
    output_text_chars: int = 0
    status: str = "in_progress"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# What the engine's brain is asked when server_vad's idle_timeout_ms passes (its "still there" line).
IDLE_PROMPT = "The caller has been silent. Ask whether they are still there."
# semantic_vad eagerness -> the pause that ends a turn (low waits for the caller, high answers quickly).
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}


def _default_turn_detection() -> dict[str, Any]:
    return {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
        "create_response": True, "interrupt_response": True, "idle_timeout_ms": None,
    }


class RealtimeSession:
    """One Realtime connection's state. Call `opened()` first and send what it returns."""

    def __init__(
        self,
        classifier_factory: Callable[[float], FrameClassifier],
        new_id: Callable[[str], str] = _new_id,
        model: str = ENGINE_MODEL,
    ) -> None:
        self._classifier_factory = classifier_factory
        self._new_id = new_id
        self._session_id = new_id("sess")
        self._conversation_id = new_id("conv")
        self._model = model
        self._instructions = ""
        self._tools: list[dict[str, Any]] = []
        self._tool_choice: Any = "auto"
        self._output_modalities = ["audio"]
        self._voice = "marin"
        self._speed = 1.0
        self._transcription: dict[str, Any] | None = None
        self._noise_reduction: dict[str, Any] | None = None
        self._turn_detection: dict[str, Any] | None = _default_turn_detection()
        self._items: dict[str, dict[str, Any]] = {}
        self._audio: dict[str, bytes] = {}
        self._transcripts: dict[str, str] = {}
        self._pending_transcriptions: set[str] = set()
        self._buffer = bytearray()
        self._buffer_start_ms = 0
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0
        self._detector: TurnDetector | None = None
        self._responses: dict[str, _Response] = {}
        self._active_response_id: str | None = None
        # server_vad idle_timeout_ms: where (in appended audio) the caller's silence began counting.
        self._idle_from_ms: int | None = None
        self._rebuild_detector()

    # -- lifecycle ---------------------------------------------------------------------------------

    def opened(self) -> list[Output]:
        return [self._send({"type": "session.created", "session": self.session_config()})]

    @property
    def active_response_id(self) -> str | None:
        return self._active_response_id

    def is_response_active(self, response_id: str) -> bool:
        return self._active_response_id == response_id

    def pending_transcriptions(self) -> set[str]:
        """User items whose transcript the brain still needs."""
        return set(self._pending_transcriptions)

    # -- client events -----------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any]) -> list[Output]:
        """One client event -> what to send and do. Protocol errors become `error` events."""
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        handler = self._handlers().get(kind) if isinstance(kind, str) else None
        try:
            if handler is None:
                raise ClientError("invalid_value", f"Invalid value: '{kind}'. Unknown client event type.", "type")
            return handler(event)
        except ClientError as exc:
            return [self._error(exc, client_event_id)]

    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any]], list[Output]]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_request,
            "input_audio_buffer.clear": self._clear,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
        }

    def _session_update(self, event: Mapping[str, Any]) -> list[Output]:
        session = _require(event, "session", Mapping)
        if session.get("type") != "realtime":
            raise ClientError("missing_required_parameter", "Missing required parameter: 'session.type'.",
                              "session.type")
        audio = session.get("audio") or {}
        audio_in = audio.get("input") or {}
        audio_out = audio.get("output") or {}
        for path, fmt in (("audio.input.format", audio_in.get("format")),
                          ("audio.output.format", audio_out.get("format"))):
            if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "audio/pcmu"):
                raise ClientError("invalid_value", f"This engine supports only audio/pcmu for session.{path}.",
                                  f"session.{path}")
        if "instructions" in session:
            self._instructions = str(session["instructions"] or "")
        if "tools" in session:
            self._tools = [dict(tool) for tool in session["tools"] or [] if isinstance(tool, Mapping)]
        if "tool_choice" in session:
            self._tool_choice = session["tool_choice"]
        if "output_modalities" in session:
            self._output_modalities = list(session["output_modalities"] or ["audio"])
        if "transcription" in audio_in:
            self._transcription = audio_in["transcription"]
        if "noise_reduction" in audio_in:
            self._noise_reduction = audio_in["noise_reduction"]
        if "turn_detection" in audio_in:
            self._turn_detection = self._merged_turn_detection(audio_in["turn_detection"])
            self._rebuild_detector()
        voice = audio_out.get("voice")
        if isinstance(voice, str):
            self._voice = voice
        if isinstance(audio_out.get("speed"), int | float):
            self._speed = float(audio_out["speed"])
        return [self._send({"type": "session.updated", "session": self.session_config()})]

    def _merged_turn_detection(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or value.get("type") not in ("server_vad", "semantic_vad"):
            raise ClientError("invalid_value", "turn_detection.type must be server_vad or semantic_vad.",
                              "session.audio.input.turn_detection.type")
        merged = _default_turn_detection()
        if value.get("type") == "semantic_vad":
            merged = {"type": "semantic_vad", "eagerness": value.get("eagerness", "auto"),
                      "create_response": True, "interrupt_response": True}
        merged.update({k: v for k, v in value.items() if v is not None})
        return merged

    def _rebuild_detector(self) -> None:
        config = self._turn_detection
        if config is None:
            self._detector = None
            return
        # semantic_vad has no threshold or timings: its eagerness becomes how long a pause ends the turn.
        silence_ms = (SEMANTIC_SILENCE_MS.get(str(config.get("eagerness")), 800) if config["type"] == "semantic_vad"
                      else int(config.get("silence_duration_ms", 500)))
        appended_ms = self._buffer_start_ms + len(self._buffer) // g711.BYTES_PER_MS
        detector = TurnDetector(
            self._classifier_factory(float(config.get("threshold", 0.5))),
            prefix_padding_ms=int(config.get("prefix_padding_ms", 300)),
            silence_duration_ms=silence_ms,
            position_ms=appended_ms - appended_ms % FRAME_MS,
        )
        detector.reset(floor_ms=self._buffer_start_ms)
        self._detector = detector

    def _append(self, event: Mapping[str, Any]) -> list[Output]:
        encoded = _require(event, "audio", str)
        try:
            mulaw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError("invalid_value", "audio is not valid base64.", "audio") from None
        self._buffer.extend(mulaw)
        if self._detector is None:
            return []
        outputs: list[Output] = []
        for vad_event in self._detector.push(mulaw):
            if isinstance(vad_event, SpeechStarted):
                outputs.extend(self._speech_started(vad_event.audio_start_ms))
            elif isinstance(vad_event, SpeechStopped):
                outputs.extend(self._speech_stopped(vad_event.audio_end_ms))
        outputs.extend(self._check_idle_timeout())
        return outputs

    def _check_idle_timeout(self) -> list[Output]:
        """server_vad `idle_timeout_ms`: counted (in appended audio, the session's clock) from the end of the
        last response's audio; when it passes with no speech, the silent audio is committed and answered."""
        config = self._turn_detection or {}
        idle_timeout_ms = config.get("idle_timeout_ms")
        if (config.get("type") != "server_vad" or not isinstance(idle_timeout_ms, int) or self._idle_from_ms is None
                or self._active_response_id is not None or self._speech_item_id is not None):
            return []
        position_ms = self._buffer_start_ms + len(self._buffer) // g711.BYTES_PER_MS
        if position_ms - self._idle_from_ms < idle_timeout_ms:
            return []
        item_id = self._new_id("item")
        outputs: list[Output] = [self._send({
            "type": "input_audio_buffer.timeout_triggered", "audio_start_ms": max(self._idle_from_ms,
                                                                                   self._buffer_start_ms),
            "audio_end_ms": position_ms, "item_id": item_id})]
        self._idle_from_ms = None
        mulaw = bytes(self._buffer)
        self._buffer.clear()
        self._buffer_start_ms = position_ms
        if self._detector is not None:
            self._detector.reset(floor_ms=position_ms)
        outputs.extend(self._commit(item_id, mulaw))
        outputs.extend(self._start_response({"instructions": IDLE_PROMPT}))
        return outputs

    def _speech_started(self, audio_start_ms: int) -> list[Output]:
        self._idle_from_ms = None
        self._speech_item_id = self._new_id("item")
        self._speech_start_ms = audio_start_ms
        outputs: list[Output] = [self._send({
            "type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms,
            "item_id": self._speech_item_id,
        })]
        config = self._turn_detection or {}
        if self._active_response_id is not None and config.get("interrupt_response", True):
            outputs.extend(self._cancel(self._active_response_id, reason="turn_detected"))
        return outputs

    def _speech_stopped(self, audio_end_ms: int) -> list[Output]:
        item_id = self._speech_item_id or self._new_id("item")
        outputs: list[Output] = [self._send({
            "type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id,
        })]
        start = (self._speech_start_ms - self._buffer_start_ms) * g711.BYTES_PER_MS
        end = (audio_end_ms - self._buffer_start_ms) * g711.BYTES_PER_MS
        mulaw = bytes(self._buffer[max(0, start):end])
        del self._buffer[:end]
        self._buffer_start_ms = audio_end_ms
        self._speech_item_id = None
        outputs.extend(self._commit(item_id, mulaw))
        config = self._turn_detection or {}
        if config.get("create_response", True) and self._active_response_id is None:
            outputs.extend(self._start_response({}))
        return outputs

    def _commit_request(self, event: Mapping[str, Any]) -> list[Output]:
        buffered_ms = len(self._buffer) // g711.BYTES_PER_MS
        if buffered_ms < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or self._new_id("item")
        mulaw = bytes(self._buffer)
        self._buffer.clear()
        self._buffer_start_ms += buffered_ms
        self._speech_item_id = None
        if self._detector is not None:
            self._detector.reset(floor_ms=self._buffer_start_ms)
        return self._commit(item_id, mulaw)

    def _commit(self, item_id: str, mulaw: bytes) -> list[Output]:
        previous_item_id = self._last_item_id()
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        self._items[item_id] = item
        self._audio[item_id] = mulaw
        self._pending_transcriptions.add(item_id)
        return [
            self._send({"type": "input_audio_buffer.committed", "item_id": item_id,
                        "previous_item_id": previous_item_id}),
            self._send({"type": "conversation.item.added", "item": _copy(item),
                        "previous_item_id": previous_item_id}),
            self._send({"type": "conversation.item.done", "item": _copy(item),
                        "previous_item_id": previous_item_id}),
            Transcribe(item_id=item_id, mulaw=mulaw),
        ]

    def _clear(self, event: Mapping[str, Any]) -> list[Output]:
        self._buffer_start_ms += len(self._buffer) // g711.BYTES_PER_MS
        self._buffer.clear()
        self._speech_item_id = None
        if self._detector is not None:
            self._detector.reset(floor_ms=self._buffer_start_ms)
        return [self._send({"type": "input_audio_buffer.cleared"})]

    def transcription_finished(self, item_id: str, transcript: str) -> list[Output]:
        """Record a user item's transcript; the event goes out only if the session asked for transcription."""
        self._pending_transcriptions.discard(item_id)
        item = self._items.get(item_id)
        if item is None:
            return []
        self._transcripts[item_id] = transcript
        item["content"][0]["transcript"] = transcript
        if self._transcription is None:
            return []
        audio_s = len(self._audio.get(item_id, b"")) / (g711.BYTES_PER_MS * 1000)
        return [self._send({
            "type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
            "content_index": 0, "transcript": transcript,
            "usage": {"type": "duration", "seconds": round(audio_s, 3)},
        })]

    # -- conversation items ------------------------------------------------------------------------

    def _item_create(self, event: Mapping[str, Any]) -> list[Output]:
        raw = _require(event, "item", Mapping)
        item = self._normalise_item(raw)
        if item["id"] in self._items:
            raise ClientError("invalid_value", f"Item with id '{item['id']}' already exists.", "item.id")
        previous_item_id = event.get("previous_item_id")
        if previous_item_id is not None and previous_item_id not in self._items:
            raise ClientError("invalid_value", f"Item with id '{previous_item_id}' not found.",
                              "previous_item_id")
        previous = previous_item_id if isinstance(previous_item_id, str) else self._last_item_id()
        self._insert_after(item, previous)
        return [
            self._send({"type": "conversation.item.added", "item": _copy(item), "previous_item_id": previous}),
            self._send({"type": "conversation.item.done", "item": _copy(item), "previous_item_id": previous}),
        ]

    def _normalise_item(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        kind = raw.get("type")
        item_id = raw.get("id") if isinstance(raw.get("id"), str) else self._new_id("item")
        base: dict[str, Any] = {"id": item_id, "object": "realtime.item", "status": "completed"}
        if kind == "function_call_output":
            call_id = raw.get("call_id")
            if not isinstance(call_id, str) or not isinstance(raw.get("output"), str):
                raise ClientError("missing_required_parameter",
                                  "function_call_output needs call_id and output strings.", "item")
            return {**base, "type": "function_call_output", "call_id": call_id, "output": raw["output"]}
        if kind == "function_call":
            return {**base, "type": "function_call", "call_id": str(raw.get("call_id", "")),
                    "name": str(raw.get("name", "")), "arguments": str(raw.get("arguments", "{}"))}
        if kind == "message":
            role = raw.get("role")
            content = raw.get("content")
            if role not in ("user", "assistant", "system") or not isinstance(content, list):
                raise ClientError("invalid_value", "message items need a role and a content list.", "item")
            for part in content:
                if isinstance(part, Mapping) and part.get("type") in ("output_audio", "audio"):
                    raise ClientError("invalid_value", "Assistant audio content cannot be created.",
                                      "item.content")
            return {**base, "type": "message", "role": role, "content": [dict(p) for p in content]}
        raise ClientError("invalid_value", f"Invalid value: '{kind}'. Unsupported item type.", "item.type")

    def _item_truncate(self, event: Mapping[str, Any]) -> list[Output]:
        item_id = _require(event, "item_id", str)
        audio_end_ms = _require(event, "audio_end_ms", int)
        content_index = event.get("content_index", 0)
        item = self._items.get(item_id)
        if item is None:
            raise ClientError("invalid_value", f"Item with item_id '{item_id}' not found.", "item_id")
        if item.get("role") != "assistant" or item_id not in self._audio or content_index != 0:
            raise ClientError("invalid_value", "Only assistant audio content can be truncated.", "item_id")
        audio_ms = g711.mulaw_duration_ms(len(self._audio[item_id]))
        if audio_end_ms < 0 or audio_end_ms > audio_ms:
            raise ClientError("invalid_value",
                              f"Audio content of {audio_ms}ms is already shorter than {audio_end_ms}ms.",
                              "audio_end_ms")
        self._audio[item_id] = self._audio[item_id][: audio_end_ms * g711.BYTES_PER_MS]
        # The service drops the transcript of a truncated item: it cannot align text to the cut.
        for part in item["content"]:
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self._transcripts.pop(item_id, None)
        return [self._send({"type": "conversation.item.truncated", "item_id": item_id,
                            "content_index": 0, "audio_end_ms": audio_end_ms})]

    def _item_delete(self, event: Mapping[str, Any]) -> list[Output]:
        item_id = _require(event, "item_id", str)
        if item_id not in self._items:
            raise ClientError("invalid_value", f"Item with item_id '{item_id}' not found.", "item_id")
        del self._items[item_id]
        self._audio.pop(item_id, None)
        self._transcripts.pop(item_id, None)
        self._pending_transcriptions.discard(item_id)
        return [self._send({"type": "conversation.item.deleted", "item_id": item_id})]

    def _item_retrieve(self, event: Mapping[str, Any]) -> list[Output]:
        item_id = _require(event, "item_id", str)
        item = self._items.get(item_id)
        if item is None:
            raise ClientError("invalid_value", f"Item with item_id '{item_id}' not found.", "item_id")
        full = _copy(item)
        if item_id in self._audio:
            audio_b64 = base64.b64encode(self._audio[item_id]).decode("ascii")
            for part in full["content"]:
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = audio_b64
        return [self._send({"type": "conversation.item.retrieved", "item": full})]

    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None) if self._items else None

    def _insert_after(self, item: dict[str, Any], previous_item_id: str | None) -> None:
        if previous_item_id is None or previous_item_id == self._last_item_id():
            self._items[item["id"]] = item
            return
        reordered: dict[str, dict[str, Any]] = {}
        if previous_item_id is None:
            reordered[item["id"]] = item
        for key, value in self._items.items():
            reordered[key] = value
            if key == previous_item_id:
                reordered[item["id"]] = item
        self._items = reordered

    # -- responses ---------------------------------------------------------------------------------

    def _response_create(self, event: Mapping[str, Any]) -> list[Output]:
        options = event.get("response") or {}
        if not isinstance(options, Mapping):
            raise ClientError("invalid_type", "response must be an object.", "response")
        if self._active_response_id is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self._active_response_id}. Wait until the response is finished before creating a new one.",
            )
        return self._start_response(options)

    def _start_response(self, options: Mapping[str, Any]) -> list[Output]:
        response_id = self._new_id("resp")
        instructions = options.get("instructions")
        tools = options.get("tools")
        metadata = options.get("metadata")
        response = _Response(
            response_id=response_id,
            instructions=instructions if isinstance(instructions, str) else None,
            tools=[dict(t) for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else None,
            output_modalities=list(options.get("output_modalities") or self._output_modalities),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
            is_out_of_band=options.get("conversation") == "none",
        )
        self._responses[response_id] = response
        self._active_response_id = response_id
        return [self._send({"type": "response.created", "response": self._response_body(response)}),
                StartResponse(response_id)]

    def _response_cancel(self, event: Mapping[str, Any]) -> list[Output]:
        requested = event.get("response_id")
        active = self._active_response_id
        if active is None or (isinstance(requested, str) and requested != active):
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found.")
        return self._cancel(active, reason="client_cancelled")

    def _cancel(self, response_id: str, reason: str) -> list[Output]:
        response = self._responses[response_id]
        outputs: list[Output] = [StopResponse(response_id)]
        for index, item in enumerate(response.output):
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
                outputs.append(self._send({"type": "response.output_item.done", "response_id": response_id,
                                           "output_index": index, "item": self._item_view(item)}))
                if not response.is_out_of_band:
                    outputs.append(self._send({"type": "conversation.item.done", "item": self._item_view(item)}))
        response.status = "cancelled"
        self._active_response_id = None
        body = self._response_body(response)
        body["status_details"] = {"type": "cancelled", "reason": reason}
        outputs.append(self._send({"type": "response.done", "response": body}))
        return outputs

    def brain_input(self, response_id: str) -> brain.BrainInput:
        """What the brain may know for this response: instructions, tools and the conversation so far."""
        response = self._responses[response_id]
        tools = response.tools if response.tools is not None else self._tools
        turns: list[brain.Turn] = []
        for item_id, item in self._items.items():
            turn = self._turn_of(item_id, item)
            if turn is not None:
                turns.append(turn)
        return brain.BrainInput(
            instructions=self._instructions,
            tools=tuple(brain.ToolSpec(str(t.get("name", "")), str(t.get("description", "")),
                                       t.get("parameters") or {}) for t in tools if t.get("type") == "function"),
            turns=tuple(turns),
            response_instructions=response.instructions,
        )

    def _turn_of(self, item_id: str, item: Mapping[str, Any]) -> brain.Turn | None:
        kind = item.get("type")
        if kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            return brain.ToolCalled(str(item.get("call_id")), str(item.get("name")),
                                    arguments if isinstance(arguments, dict) else {})
        if kind == "function_call_output":
            return brain.ToolReturned(str(item.get("call_id")), str(item.get("output")))
        if kind != "message":
            return None
        texts = [str(p.get("text") or p.get("transcript") or "") for p in item.get("content", [])]
        if item_id in self._transcripts:
            texts = [self._transcripts[item_id]]
        text = " ".join(t for t in texts if t).strip()
        if item.get("role") == "user":
            return brain.CallerSaid(text)
        if item.get("role") == "assistant" and text:
            return brain.AgentSaid(text)
        return None

    def response_message_begin(self, response_id: str) -> tuple[str, list[Output]]:
        """Open an assistant message in the response: output_item.added, item added, content_part.added."""
        response = self._responses[response_id]
        item_id = self._new_id("item")
        is_audio = "audio" in response.output_modalities
        part_type = "output_audio" if is_audio else "output_text"
        item: dict[str, Any] = {"id": item_id, "type": "message", "object": "realtime.item",
                                "status": "in_progress", "role": "assistant", "content": []}
        output_index = len(response.output)
        response.output.append(item)
        outputs: list[Output] = [self._send({"type": "response.output_item.added", "response_id": response_id,
                                             "output_index": output_index, "item": _copy(item)})]
        if not response.is_out_of_band:
            previous = self._last_item_id()
            self._items[item_id] = item
            self._audio[item_id] = b""
            outputs.append(self._send({"type": "conversation.item.added", "item": _copy(item),
                                       "previous_item_id": previous}))
        part: dict[str, Any] = {"type": part_type, "transcript": ""} if is_audio else {"type": "output_text",
                                                                                         "text": ""}
        item["content"].append(part)
        outputs.append(self._send({"type": "response.content_part.added", "response_id": response_id,
                                   "item_id": item_id, "output_index": output_index, "content_index": 0,
                                   "part": _content_part(part)}))
        return item_id, outputs

    def response_message_sentence(self, response_id: str, item_id: str, text: str, mulaw: bytes) -> list[Output]:
        """One synthesized sentence: its transcript delta, then its audio in ~100 ms deltas."""
        if not self.is_response_active(response_id):
            return []
        response = self._responses[response_id]
        output_index = self._output_index(response, item_id)
        item = response.output[output_index]
        part = item["content"][0]
        spoken = (" " if part.get("transcript") or part.get("text") else "") + text
        common = {"response_id": response_id, "item_id": item_id, "output_index": output_index, "content_index": 0}
        response.output_text_chars += len(spoken)
        if part["type"] == "output_text":
            part["text"] += spoken
            return [self._send({"type": "response.output_text.delta", **common, "delta": spoken})]
        part["transcript"] += spoken
        outputs: list[Output] = [
            self._send({"type": "response.output_audio_transcript.delta", **common, "delta": spoken})
        ]
        step = AUDIO_DELTA_MS * g711.BYTES_PER_MS
        for offset in range(0, len(mulaw), step):
            chunk = mulaw[offset: offset + step]
            outputs.append(self._send({"type": "response.output_audio.delta", **common,
                                       "delta": base64.b64encode(chunk).decode("ascii")}))
        if not response.is_out_of_band:
            self._audio[item_id] = self._audio.get(item_id, b"") + mulaw
        response.output_audio_ms += g711.mulaw_duration_ms(len(mulaw))
        return outputs

    def response_message_end(self, response_id: str, item_id: str) -> list[Output]:
        if not self.is_response_active(response_id):
            return []
        response = self._responses[response_id]
        output_index = self._output_index(response, item_id)
        item = response.output[output_index]
        part = item["content"][0]
        common = {"response_id": response_id, "item_id": item_id, "output_index": output_index, "content_index": 0}
        outputs: list[Output] = []
        if part["type"] == "output_audio":
            outputs.append(self._send({"type": "response.output_audio.done", **common}))
            outputs.append(self._send({"type": "response.output_audio_transcript.done", **common,
                                       "transcript": part["transcript"]}))
        else:
            outputs.append(self._send({"type": "response.output_text.done", **common, "text": part["text"]}))
        outputs.append(self._send({"type": "response.content_part.done", **common, "part": _content_part(part)}))
        item["status"] = "completed"
        outputs.append(self._send({"type": "response.output_item.done", "response_id": response_id,
                                   "output_index": output_index, "item": self._item_view(item)}))
        if not response.is_out_of_band:
            outputs.append(self._send({"type": "conversation.item.done", "item": self._item_view(item)}))
        return outputs

    def response_function_call(self, response_id: str, name: str, arguments: Mapping[str, Any]) -> list[Output]:
        """A complete function_call output item: added, argument delta and done, item done."""
        if not self.is_response_active(response_id):
            return []
        response = self._responses[response_id]
        item_id, call_id = self._new_id("item"), self._new_id("call")
        arguments_json = json.dumps(dict(arguments))
        item: dict[str, Any] = {"id": item_id, "type": "function_call", "object": "realtime.item",
                                "status": "in_progress", "call_id": call_id, "name": name, "arguments": ""}
        output_index = len(response.output)
        response.output.append(item)
        outputs: list[Output] = [self._send({"type": "response.output_item.added", "response_id": response_id,
                                             "output_index": output_index, "item": _copy(item)})]
        if not response.is_out_of_band:
            previous = self._last_item_id()
            self._items[item_id] = item
            outputs.append(self._send({"type": "conversation.item.added", "item": _copy(item),
                                       "previous_item_id": previous}))
        common = {"response_id": response_id, "item_id": item_id, "output_index": output_index, "call_id": call_id}
        outputs.append(self._send({"type": "response.function_call_arguments.delta", **common,
                                   "delta": arguments_json}))
        item["arguments"] = arguments_json
        response.output_text_chars += len(arguments_json)
        outputs.append(self._send({"type": "response.function_call_arguments.done", **common, "name": name,
                                   "arguments": arguments_json}))
        item["status"] = "completed"
        outputs.append(self._send({"type": "response.output_item.done", "response_id": response_id,
                                   "output_index": output_index, "item": _copy(item)}))
        if not response.is_out_of_band:
            outputs.append(self._send({"type": "conversation.item.done", "item": _copy(item)}))
        return outputs

    def response_finish(self, response_id: str) -> list[Output]:
        """response.done (completed) and rate_limits.updated; the conversation may take a new response."""
        if not self.is_response_active(response_id):
            return []
        response = self._responses[response_id]
        response.status = "completed"
        self._active_response_id = None
        # The idle timeout counts from when this response's audio will have played (at real time).
        self._idle_from_ms = self._buffer_start_ms + len(self._buffer) // g711.BYTES_PER_MS + response.output_audio_ms
        return [
            self._send({"type": "response.done", "response": self._response_body(response)}),
            self._send({"type": "rate_limits.updated", "rate_limits": [
                {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
                {"name": "tokens", "limit": 1_000_000, "remaining": 1_000_000, "reset_seconds": 0.0},
            ]}),
        ]

    def response_output_audio_ms(self, response_id: str) -> int:
        return self._responses[response_id].output_audio_ms

    def _output_index(self, response: _Response, item_id: str) -> int:
        return next(i for i, item in enumerate(response.output) if item["id"] == item_id)

    def _item_view(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return _copy(item)

    def _response_body(self, response: _Response) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": response.response_id, "object": "realtime.response", "status": response.status,
            "status_details": None, "output": [_copy(item) for item in response.output],
            "conversation_id": None if response.is_out_of_band else self._conversation_id,
            "output_modalities": response.output_modalities, "max_output_tokens": "inf",
            "audio": {"output": {"format": PCMU, "voice": self._voice}},
            "metadata": response.metadata, "usage": None,
        }
        if response.status != "in_progress":
            body["usage"] = self._usage_estimate(response)
        return body

    def _usage_estimate(self, response: _Response) -> dict[str, Any]:
        """Token counts in the service's shape, estimated (no tokenizer here): ~4 characters per text token,
        10 audio tokens per second of input and 20 per second of output, as the service bills roughly."""
        input_audio_ms = sum(g711.mulaw_duration_ms(len(a)) for k, a in self._audio.items()
                             if self._items.get(k, {}).get("role") == "user")
        input_text_chars = len(self._instructions) + sum(len(t) for t in self._transcripts.values())
        input_text, input_audio = input_text_chars // 4, input_audio_ms // 100
        output_text, output_audio = response.output_text_chars // 4, response.output_audio_ms // 50
        return {
            "total_tokens": input_text + input_audio + output_text + output_audio,
            "input_tokens": input_text + input_audio, "output_tokens": output_text + output_audio,
            "input_token_details": {"text_tokens": input_text, "audio_tokens": input_audio, "image_tokens": 0,
                                    "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0,
                                                              "image_tokens": 0}},
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }

    # -- helpers -------------------------------------------------------------------------------------

    def session_config(self) -> dict[str, Any]:
        return {
            "type": "realtime", "object": "realtime.session", "id": self._session_id, "model": self._model,
            "output_modalities": self._output_modalities, "instructions": self._instructions,
            "tools": self._tools, "tool_choice": self._tool_choice, "max_output_tokens": "inf",
            "tracing": None, "prompt": None, "expires_at": 0, "include": None,
            "audio": {
                "input": {"format": PCMU, "transcription": self._transcription,
                          "noise_reduction": self._noise_reduction, "turn_detection": self._turn_detection},
                "output": {"format": PCMU, "voice": self._voice, "speed": self._speed},
            },
        }

    def _send(self, event: dict[str, Any]) -> Send:
        return Send({"event_id": self._new_id("event"), **event})

    def _error(self, exc: ClientError, client_event_id: str | None) -> Send:
        return self._send({"type": "error", "error": {
            "type": "invalid_request_error", "code": exc.code, "message": exc.message, "param": exc.param,
            "event_id": client_event_id,
        }})


def _require(event: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = event.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ClientError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    return value


def _content_part(part: Mapping[str, Any]) -> dict[str, Any]:
    """content_part events name the part "audio"/"text" where the item content says output_audio/output_text."""
    return {**part, "type": "audio" if part["type"] == "output_audio" else "text"}


def _copy(item: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(item)
    if isinstance(copied.get("content"), list):
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied

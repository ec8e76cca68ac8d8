"""A fake ElevenLabs multi-context TTS WebSocket (`multi-stream-input`) on 127.0.0.1, for tests and demos.

It checks the upgrade (`xi-api-key`, `output_format=ulaw_8000`) and every client message (protocols.md
§3.2), buffers text per context and honours the chunk schedule (no audio before 120 characters, then
160, 250, 290, or a flush), and answers with a recognizable μ-law tone whose length matches the
alignment it sends. It records what it received and can drop, fail, stall or refuse on command. Every
task lives in its connection's TaskGroup; nothing outlives the `async with` block.

    async with FakeElevenLabs(api_key="xi-test") as fake:
        ...  # point the code under test at fake.base_url
        connection = await fake.wait_for_connection()
        await connection.wait_for_final("c1")
        assert connection.text_of("c1") == "Hello there. "
"""

from __future__ import annotations

import asyncio
import base64
import http
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from switchboard.audio.g711 import pcm16_to_mulaw

__all__ = ["FakeElevenLabs", "FakeTtsConnection", "FakeTtsContext", "tts_tone_mulaw"]

JsonDict: TypeAlias = dict[str, Any]

MAX_CONTEXTS = 5
DEFAULT_SCHEDULE = (120, 160, 250, 290)
TONE_HZ = 400  # 20 samples per period at 8 kHz, so a one-second table tiles without a click
_MESSAGE_KEYS = frozenset({
    "text", "context_id", "voice_settings", "generation_config", "pronunciation_dictionary_locators",
    "xi_api_key", "authorization", "flush", "close_context", "close_socket",
})
_VOICE_RANGES = {"stability": (0.0, 1.0), "similarity_boost": (0.0, 1.0), "style": (0.0, 1.0),
                 "speed": (0.7, 1.2)}


def _tone_second() -> bytes:
    step = 2 * math.pi * TONE_HZ / 8_000
    samples = [round(8_000 * math.sin(step * n)) for n in range(8_000)]
    return pcm16_to_mulaw(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


_TONE_SECOND = _tone_second()


def tts_tone_mulaw(duration_ms: int) -> bytes:
    """The audio the fake sends for `duration_ms` of speech: a 400 Hz tone starting at phase zero."""
    count = duration_ms * 8
    return (_TONE_SECOND * (count // len(_TONE_SECOND) + 1))[:count]


class _ClientError(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@dataclass(frozen=True, slots=True)
class _Chunk:
    text: str


@dataclass(frozen=True, slots=True)
class _Flush:
    pass


class FakeTtsContext:
    """One context as the fake saw it: the text it got, what it spoke, and how it ended."""

    def __init__(self, context_id: str, init_message: JsonDict, schedule: tuple[int, ...]) -> None:
        self.context_id = context_id
        self.voice_settings: JsonDict | None = init_message.get("voice_settings")
        self.generation_config: JsonDict | None = init_message.get("generation_config")
        self.schedule = schedule
        self.text = ""
        """Every `text` received after the initialising space, concatenated."""
        self.spoken_chunks: list[str] = []
        """The text of each chunk sent as audio, in order."""
        self.audio_ms_sent = 0
        self.flushes = 0
        self.finals_sent = 0
        self.keep_alives = 0
        self.late_messages: list[JsonDict] = []
        """Messages for this context after `close_context` (a client should send none)."""
        self.is_closed = False
        self._pending = ""
        self._schedule_index = 0
        self._work: asyncio.Queue[_Chunk | _Flush | None] = asyncio.Queue()
        self._flushing = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def spoken_text(self) -> str:
        return "".join(self.spoken_chunks)

    @property
    def pending_text(self) -> str:
        """Buffered text the schedule has not released yet."""
        return self._pending

    @property
    def is_flushing(self) -> bool:
        return self._flushing > 0

    def _add_text(self, text: str) -> None:
        self.text += text
        self._pending += text
        threshold = self.schedule[min(self._schedule_index, len(self.schedule) - 1)]
        if len(self._pending) >= threshold:
            self._release()

    def _flush(self) -> None:
        self.flushes += 1
        self._flushing += 1
        if self._pending:
            self._release()
        self._work.put_nowait(_Flush())
        self._schedule_index = 0  # the next turn waits for the first threshold again

    def _release(self) -> None:
        self._work.put_nowait(_Chunk(self._pending))
        self._pending = ""
        self._schedule_index += 1


class FakeTtsConnection:
    """The server side of one TTS WebSocket: records, waits and failure controls.

    Records: `received` (valid client messages, in order), `sent` (every server message), `contexts`
    (by id, including closed ones), `protocol_errors` (what the fake refused; should stay empty).
    """

    def __init__(self, server: FakeElevenLabs, connection: ServerConnection, index: int) -> None:
        self.server = server
        self.index = index
        request = connection.request
        assert request is not None
        parts = urlsplit(request.path)
        self.voice_id = unquote(parts.path.split("/")[3])
        self.query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        self.model_id = self.query.get("model_id")
        self.request_headers: dict[str, str] = dict(request.headers)
        self.received: list[JsonDict] = []
        self.sent: list[JsonDict] = []
        self.contexts: dict[str, FakeTtsContext] = {}
        self.protocol_errors: list[str] = []
        self._connection = connection
        self._changed = asyncio.Condition()
        self._not_stalled = asyncio.Event()
        if not server.is_stalled:
            self._not_stalled.set()
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._chunks_sent = 0

    # -- controls -------------------------------------------------------------------------------------

    def text_of(self, context_id: str) -> str:
        """All text received for `context_id` (KeyError if never initialised)."""
        return self.contexts[context_id].text

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def open_context_ids(self) -> list[str]:
        return [c.context_id for c in self.contexts.values() if not c.is_closed]

    def stall(self, stalled: bool = True) -> None:
        """Stop sending (audio and finals wait; messages are still read and recorded) until `stall(False)`."""
        if stalled:
            self._not_stalled.clear()
        else:
            self._not_stalled.set()

    async def drop(self) -> None:
        """Abort the TCP connection without a close frame (the client sees close code 1006)."""
        self._connection.transport.abort()
        await self.wait_for_closed()

    async def fail(self, message: str = "An internal server error occurred.", error: str = "internal_error",
                   *, code: int = 1011) -> None:
        """Send an ElevenLabs error message, then close the socket with `code`."""
        await self._send({"message": message, "error": error, "code": code})
        await self._connection.close(code, error)
        await self.wait_for_closed()

    async def send_raw(self, message: JsonDict | str) -> None:
        """Send anything, as is (a dict is JSON-encoded)."""
        if isinstance(message, str):
            async with self._send_lock:
                await self._connection.send(message)
        else:
            await self._send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)

    async def wait_for_closed(self, timeout_s: float = 2.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._closed.wait()

    async def wait_for_message(self, predicate: Callable[[JsonDict], bool], *, timeout_s: float = 2.0,
                               after_index: int = 0) -> JsonDict:
        """The first valid client message at or after `received[after_index]` matching `predicate`.

        Raises:
            TimeoutError: none arrived within `timeout_s`.
        """
        return await self._wait_in(self.received, predicate, timeout_s, after_index)

    async def wait_for_sent(self, predicate: Callable[[JsonDict], bool], *, timeout_s: float = 2.0,
                            after_index: int = 0) -> JsonDict:
        """Like `wait_for_message`, over what the fake has sent."""
        return await self._wait_in(self.sent, predicate, timeout_s, after_index)

    async def wait_for_final(self, context_id: str, *, timeout_s: float = 2.0) -> JsonDict:
        return await self.wait_for_sent(
            lambda m: m.get("isFinal") is True and m.get("contextId") == context_id, timeout_s=timeout_s)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                try:
                    async for message in self._connection:
                        if not await self._receive(message):
                            break
                except ConnectionClosed:
                    pass
                finally:
                    for context in self.contexts.values():
                        if context._task is not None:
                            context._task.cancel()
        finally:
            self._closed.set()
            await self._notify()

    async def _receive(self, raw: str | bytes) -> bool:
        """Handle one client frame; False once the socket is being closed."""
        try:
            message = self._validate(raw)
            self.received.append(message)
            await self._notify()
            return await self._dispatch(message)
        except _ClientError as exc:
            self.protocol_errors.append(exc.error)
            await self._notify()
            await self._send({"message": exc.message, "error": exc.error, "code": 1008})
            await self._connection.close(1008, exc.error)
            return False

    def _validate(self, raw: str | bytes) -> JsonDict:
        if isinstance(raw, bytes):
            raise _ClientError("invalid_request", "Binary frames are not supported.")
        try:
            message = json.loads(raw)
        except json.JSONDecodeError:
            raise _ClientError("invalid_request", "Invalid JSON.") from None
        if not isinstance(message, dict):
            raise _ClientError("invalid_request", "Expected a JSON object.")
        unknown = sorted(set(message) - _MESSAGE_KEYS)
        if unknown:
            raise _ClientError("invalid_request", f"Unknown field: '{unknown[0]}'.")
        if "close_socket" in message:
            if message["close_socket"] is not True:
                raise _ClientError("invalid_request", "'close_socket' must be true.")
            return message
        context_id = message.get("context_id")
        if not isinstance(context_id, str) or not context_id:
            raise _ClientError("invalid_request", "Missing required field: 'context_id'.")
        if "text" in message and not isinstance(message["text"], str):
            raise _ClientError("invalid_request", "'text' must be a string.")
        for flag in ("flush", "close_context"):
            if flag in message and not isinstance(message[flag], bool):
                raise _ClientError("invalid_request", f"'{flag}' must be a boolean.")
        _check_voice_settings(message.get("voice_settings"))
        _check_generation_config(message.get("generation_config"))
        return message

    async def _dispatch(self, message: JsonDict) -> bool:
        if message.get("close_socket"):
            await self._close_socket()
            return False
        context_id: str = message["context_id"]
        context = self.contexts.get(context_id)
        if context is not None and context.is_closed:
            context.late_messages.append(message)
            return True
        if message.get("close_context"):
            if context is not None:
                self._close_context(context)
            return True
        if context is None:
            if message.get("text") != " ":
                raise _ClientError("invalid_request",
                                   f"Context '{context_id}' must be initialised with a single space first.")
            if len(self.open_context_ids) >= MAX_CONTEXTS:
                raise _ClientError(
                    "max_active_conversations",
                    f"Maximum simultaneous contexts per WebSocket connection exceeded ({MAX_CONTEXTS}). "
                    "Please close an existing context before opening a new one.")
            schedule = tuple((message.get("generation_config") or {}).get("chunk_length_schedule")
                             or DEFAULT_SCHEDULE)
            context = self.contexts[context_id] = FakeTtsContext(context_id, message, schedule)
            assert self._tasks is not None
            context._task = self._tasks.create_task(self._speak(context), name=f"fake-tts-{context_id}")
            return True
        for key in ("voice_settings", "generation_config"):
            if key in message and message[key] != getattr(context, key):
                raise _ClientError("invalid_request", f"'{key}' can only be set when the context starts.")
        text = message.get("text")
        if text == "" and not message.get("flush"):
            context.keep_alives += 1
        elif text:
            context._add_text(text)
        if message.get("flush"):
            context._flush()
        return True

    def _close_context(self, context: FakeTtsContext) -> None:
        context.is_closed = True
        if context._task is None:
            return
        if context.is_flushing and self.server.close_context_finishes_flush:
            context._work.put_nowait(None)  # finish what was flushed, then stop
        else:
            context._task.cancel()

    async def _close_socket(self) -> None:
        # Contexts already flushing finish first; the others stop now.
        finishing = []
        for context in self.contexts.values():
            if context._task is None or context._task.done():
                continue
            if context.is_flushing:
                context._work.put_nowait(None)
                finishing.append(context._task)
            else:
                context._task.cancel()
            context.is_closed = True
        if finishing:
            await asyncio.wait(finishing)
        await self._connection.close(1000, "close_socket")

    async def _speak(self, context: FakeTtsContext) -> None:
        ms_per_char = self.server.ms_per_char
        while True:
            work = await context._work.get()
            if work is None:
                if not context.is_flushing:
                    return
                continue
            if isinstance(work, _Flush):
                await self._not_stalled.wait()
                context._flushing -= 1
                context.finals_sent += 1
                await self._send({"isFinal": True, "contextId": context.context_id})
                if context.is_closed and not context.is_flushing:
                    return
                continue
            first = not context.spoken_chunks
            await asyncio.sleep(self.server.first_chunk_delay_s if first else self.server.next_chunk_delay_s)
            await self._not_stalled.wait()
            duration_ms = len(work.text) * ms_per_char
            message: JsonDict = {"audio": base64.b64encode(tts_tone_mulaw(duration_ms)).decode()}
            if self.query.get("sync_alignment") == "true":
                alignment = {
                    "chars": list(work.text),
                    "charStartTimesMs": [k * ms_per_char for k in range(len(work.text))],
                    "charDurationsMs": [ms_per_char] * len(work.text),
                }
                message["normalizedAlignment"] = alignment
                message["alignment"] = alignment
            message["contextId"] = context.context_id
            context.spoken_chunks.append(work.text)
            context.audio_ms_sent += duration_ms
            await self._send(message)

    async def _send(self, message: JsonDict) -> None:
        self.sent.append(message)
        await self._notify()
        try:
            async with self._send_lock:
                await self._connection.send(json.dumps(message))
        except ConnectionClosed:
            pass

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_in(self, messages: list[JsonDict], predicate: Callable[[JsonDict], bool],
                       timeout_s: float, after_index: int) -> JsonDict:
        def find() -> JsonDict | None:
            return next((m for m in messages[after_index:] if predicate(m)), None)

        async with asyncio.timeout(timeout_s), self._changed:
            while (found := find()) is None:
                await self._changed.wait()
            return found


def _check_voice_settings(settings: object) -> None:
    if settings is None:
        return
    if not isinstance(settings, dict):
        raise _ClientError("invalid_request", "'voice_settings' must be an object.")
    for key, value in settings.items():
        if key == "use_speaker_boost":
            if not isinstance(value, bool):
                raise _ClientError("invalid_request", "'voice_settings.use_speaker_boost' must be a boolean.")
            continue
        bounds = _VOICE_RANGES.get(key)
        if bounds is None:
            raise _ClientError("invalid_request", f"Unknown field: 'voice_settings.{key}'.")
        if isinstance(value, bool) or not isinstance(value, int | float) or not bounds[0] <= value <= bounds[1]:
            raise _ClientError("invalid_request", f"'voice_settings.{key}' must be within {bounds}.")


def _check_generation_config(config: object) -> None:
    if config is None:
        return
    if not isinstance(config, dict) or set(config) - {"chunk_length_schedule"}:
        raise _ClientError("invalid_request", "'generation_config' accepts only 'chunk_length_schedule'.")
    schedule = config.get("chunk_length_schedule")
    if schedule is not None and not (
        isinstance(schedule, list) and schedule
        and all(isinstance(n, int) and not isinstance(n, bool) and 50 <= n <= 500 for n in schedule)
    ):
        raise _ClientError("invalid_request", "'chunk_length_schedule' items must be integers within 50-500.")


class FakeElevenLabs:
    """An ElevenLabs TTS server on `host:port` (port 0 = pick one); use it as `async with`.

    `chars_per_second`: speaking rate, so each character is `round(1000 / chars_per_second)` ms of audio.
    `first_chunk_delay_s` / `next_chunk_delay_s`: generation latency before a context's first chunk and
    before each later one. `close_context_finishes_flush`: when true, `close_context` on a context that
    is flushing lets it finish (what the multi-context guide describes); by default it stops at once.
    """

    def __init__(self, *, api_key: str = "xi-test-key", host: str = "127.0.0.1", port: int = 0,
                 chars_per_second: float = 15.0, first_chunk_delay_s: float = 0.05,
                 next_chunk_delay_s: float = 0.01, close_context_finishes_flush: bool = False,
                 close_timeout_s: float = 5.0) -> None:
        self.api_key = api_key
        self.host = host
        self.ms_per_char = max(1, round(1000 / chars_per_second))
        self.first_chunk_delay_s = first_chunk_delay_s
        self.next_chunk_delay_s = next_chunk_delay_s
        self.close_context_finishes_flush = close_context_finishes_flush
        self.close_timeout_s = close_timeout_s
        self.connections: list[FakeTtsConnection] = []
        self.rejected_upgrades: list[tuple[int, str]] = []
        """(status, reason) for every refused upgrade."""
        self._port = port
        self._server: Server | None = None
        self._refuse_status: int | None = None
        self._stalled = False
        self._changed = asyncio.Condition()
        self._handed_out = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeElevenLabs is not running")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """Use instead of `https://api.elevenlabs.io` (the client maps http to ws)."""
        return f"http://{self.host}:{self.port}"

    @property
    def is_stalled(self) -> bool:
        return self._stalled

    def refuse_with(self, status: int | None) -> None:
        """Refuse every upgrade with HTTP `status` from now on; None accepts again."""
        self._refuse_status = status

    def stall(self, stalled: bool = True) -> None:
        """Stall every open connection, and those opened later, until `stall(False)`."""
        self._stalled = stalled
        for connection in self.connections:
            connection.stall(stalled)

    async def wait_for_connection(self, timeout_s: float = 2.0, *, index: int | None = None) -> FakeTtsConnection:
        """The connection at `index`, or else the next one not yet returned by this method."""
        wanted = self._handed_out if index is None else index
        async with asyncio.timeout(timeout_s), self._changed:
            while len(self.connections) <= wanted:
                await self._changed.wait()
        if index is None:
            self._handed_out += 1
        return self.connections[wanted]

    async def __aenter__(self) -> FakeElevenLabs:
        self._server = await serve(self._handle, self.host, self._port, process_request=self._check_upgrade,
                                   compression=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        async with asyncio.timeout(self.close_timeout_s):
            await self._server.wait_closed()

    def _refuse(self, connection: ServerConnection, status: int, reason: str, body: JsonDict) -> Response:
        self.rejected_upgrades.append((status, reason))
        response = connection.respond(http.HTTPStatus(status), json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        segments = parts.path.split("/")
        if len(segments) != 5 or segments[1:3] != ["v1", "text-to-speech"] or segments[4] != "multi-stream-input":
            return self._refuse(connection, 404, "not_found", {"detail": "Not Found"})
        if self._refuse_status is not None:
            return self._refuse(connection, self._refuse_status, "refused_on_command",
                                {"detail": {"status": "service_unavailable", "message": "Refused by the test."}})
        if request.headers.get("xi-api-key") != self.api_key:
            return self._refuse(connection, 401, "invalid_api_key",
                                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        problem = _query_problem(query)
        if problem is not None:
            return self._refuse(connection, 400, problem, {"detail": {"status": "invalid_request",
                                                                      "message": problem}})
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        tts_connection = FakeTtsConnection(self, connection, len(self.connections))
        self.connections.append(tts_connection)
        async with self._changed:
            self._changed.notify_all()
        await tts_connection.run()


def _query_problem(query: dict[str, str]) -> str | None:
    """Why the real service would refuse these query parameters (we require what our client must send)."""
    if not query.get("model_id"):
        return "model_id is required"
    if query.get("output_format") != "ulaw_8000":
        return "output_format must be ulaw_8000 (the fake speaks only what Twilio plays)"
    timeout = query.get("inactivity_timeout")
    if timeout is not None and not (timeout.isdigit() and 1 <= int(timeout) <= 180):
        return "inactivity_timeout must be an integer within 1-180"
    if query.get("sync_alignment", "false") not in ("true", "false"):
        return "sync_alignment must be true or false"
    return None

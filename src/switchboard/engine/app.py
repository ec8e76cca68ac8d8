"""The engine's WebSocket server: `ws://HOST:PORT/v1/realtime` speaking the Realtime GA protocol.

Thin adapter: one `RealtimeSession` per connection, one TaskGroup per connection (reader in the body,
writer, transcriptions and responses as named tasks), and one worker thread shared by all connections
for the models, so the event loop never runs Whisper or hibari. `GET /health-check/live` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from switchboard.engine import brain
from switchboard.engine.session import Output, RealtimeSession, Send, StartResponse, StopResponse, Transcribe
from switchboard.engine.speech import Synthesizer, Transcriber
from switchboard.engine.vad import WebRtcFrameClassifier
from switchboard.logs import get_logger

log = get_logger("switchboard.engine")

REALTIME_PATH = "/v1/realtime"
LIVE_PATH = "/health-check/live"
OUTBOX_SIZE = 512
TRANSCRIPT_WAIT_S = 15.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_T = TypeVar("_T")


class Engine:
    """The loaded models and the single worker thread that runs them."""

    def __init__(self, transcriber: Transcriber, synthesizer: Synthesizer) -> None:
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-models")

    @classmethod
    def load(cls) -> Engine:
        """Verify and load both models, then warm them up (one synthesis, one transcription). Blocking.

        Raises:
            ModelFileError: a model package is missing or a file's SHA-256 differs.
        """
        started = time.perf_counter()
        engine = cls(Transcriber(), Synthesizer())
        loaded = time.perf_counter()
        warm_audio = engine.synthesizer.synthesize_mulaw("Thanks for calling, how can I help you today?")
        engine.transcriber.transcribe_mulaw(warm_audio)
        log.info("engine.models_loaded", load_ms=round((loaded - started) * 1000),
                 warm_up_ms=round((time.perf_counter() - loaded) * 1000))
        return engine

    async def run(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, work)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _process_request(connection: ServerConnection, request: Request) -> Response | None:
    path = request.path.split("?", 1)[0]
    if path == LIVE_PATH:
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    if path != REALTIME_PATH:
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    return None


@contextlib.asynccontextmanager
async def serve_engine(engine: Engine, host: str = "127.0.0.1", port: int = 8083) -> AsyncIterator[Server]:
    """Serve until the block exits; port 0 picks a free one (see `server.sockets`)."""

    async def handler(connection: ServerConnection) -> None:
        await _run_connection(engine, connection)

    async with serve(handler, host, port, process_request=_process_request, max_size=MAX_MESSAGE_BYTES,
                     compression=None) as server:
        log.info("engine.listening", host=host, port=next(iter(server.sockets)).getsockname()[1])
        yield server


async def run_engine(host: str = "127.0.0.1", port: int = 8083) -> None:
    """Load the models (in a thread) and serve until cancelled."""
    engine = await asyncio.to_thread(Engine.load)
    try:
        async with serve_engine(engine, host, port) as server:
            await server.serve_forever()
    finally:
        engine.close()


class _Connection:
    """Performs a session's outputs for one WebSocket."""

    def __init__(self, engine: Engine, websocket: ServerConnection, tasks: asyncio.TaskGroup) -> None:
        self.engine = engine
        self.websocket = websocket
        self.tasks = tasks
        self.session = RealtimeSession(classifier_factory=WebRtcFrameClassifier)
        # Control and audio events share one ordered queue; a full queue blocks the producer.
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self.responses: dict[str, asyncio.Task[None]] = {}
        self.transcribed: dict[str, asyncio.Event] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.speech_stopped_at: float | None = None

    async def perform(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                if output.event["type"] == "input_audio_buffer.speech_stopped":
                    self.speech_stopped_at = time.perf_counter()
                await self.outbox.put(output.event)
            elif isinstance(output, Transcribe):
                self.transcribed[output.item_id] = asyncio.Event()
                self._start(self._transcribe(output.item_id, output.mulaw), "engine-transcription")
            elif isinstance(output, StartResponse):
                task = self._start(self._respond(output.response_id), "engine-response")
                self.responses[output.response_id] = task
            elif isinstance(output, StopResponse):
                stopped = self.responses.pop(output.response_id, None)
                if stopped is not None:
                    stopped.cancel()
                log.info("engine.response_cancelled", response_id=output.response_id)

    def _start(self, work: Any, name: str) -> asyncio.Task[None]:
        task = self.tasks.create_task(work, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def write(self) -> None:
        while True:
            event = await self.outbox.get()
            await self.websocket.send(json.dumps(event))

    async def _transcribe(self, item_id: str, mulaw: bytes) -> None:
        started = time.perf_counter()
        text = await self.engine.run(lambda: self.engine.transcriber.transcribe_mulaw(mulaw))
        log.info("engine.transcription_finished", item_id=item_id, audio_ms=len(mulaw) // 8,
                 duration_ms=round((time.perf_counter() - started) * 1000))
        log.debug("engine.transcript", item_id=item_id, pii_transcript=text)
        await self.perform(self.session.transcription_finished(item_id, text))
        self.transcribed[item_id].set()

    async def _respond(self, response_id: str) -> None:
        # The brain needs the caller's words: wait for transcriptions still running.
        async with asyncio.timeout(TRANSCRIPT_WAIT_S):
            for item_id in self.session.pending_transcriptions():
                waiter = self.transcribed.get(item_id)
                if waiter is not None:
                    await waiter.wait()
        decision = brain.decide(self.session.brain_input(response_id))
        if isinstance(decision, brain.CallTool):
            log.info("engine.response_tool_call", response_id=response_id, tool=decision.name)
            log.debug("engine.tool_arguments", response_id=response_id, pii_arguments=dict(decision.arguments))
            await self.perform(self.session.response_function_call(response_id, decision.name, decision.arguments))
        else:
            await self._speak(response_id, decision.text)
        await self.perform(self.session.response_finish(response_id))
        self.responses.pop(response_id, None)

    async def _speak(self, response_id: str, text: str) -> None:
        log.debug("engine.response_text", response_id=response_id, pii_text=text)
        synthesizer = self.engine.synthesizer
        item_id, outputs = self.session.response_message_begin(response_id)
        await self.perform(outputs)
        for index, sentence in enumerate(synthesizer.split_sentences(text)):
            mulaw = await self.engine.run(lambda s=sentence: synthesizer.synthesize_mulaw(s))  # type: ignore[misc]
            if index == 0 and self.speech_stopped_at is not None:
                log.info("engine.first_audio", response_id=response_id,
                         after_speech_stopped_ms=round((time.perf_counter() - self.speech_stopped_at) * 1000))
                self.speech_stopped_at = None
            await self.perform(self.session.response_message_sentence(response_id, item_id, sentence, mulaw))
        await self.perform(self.session.response_message_end(response_id, item_id))


async def _run_connection(engine: Engine, websocket: ServerConnection) -> None:
    log.info("engine.connection_opened")
    try:
        async with asyncio.TaskGroup() as tasks:
            connection = _Connection(engine, websocket, tasks)
            writer = tasks.create_task(connection.write(), name="engine-writer")
            await connection.perform(connection.session.opened())
            try:
                async for message in websocket:
                    await connection.perform(connection.session.handle(_parse(message)))
            finally:
                writer.cancel()
                for task in list(connection.background):
                    task.cancel()
    except* ConnectionClosed:
        pass
    log.info("engine.connection_closed")


def _parse(message: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(message)
    except ValueError:
        return {"type": "<invalid json>"}
    return event if isinstance(event, dict) else {"type": "<not an object>"}

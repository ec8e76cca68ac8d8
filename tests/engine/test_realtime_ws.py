"""Whole turns over a real WebSocket against the engine, with real Whisper and hibari.

The caller's sentence is hibari speech sent as 20 ms mu-law appends; the test plays the voice server's
part (function_call_output, response.create, cancel, truncate). Every server event is checked against
the openai SDK's GA types.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from switchboard.engine.app import Engine, serve_engine

TOOLS = [
    {"type": "function", "name": "get_knowledge", "description": "Search the company knowledge base.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    {"type": "function", "name": "transfer_to_human", "description": "Transfer the caller to a person.",
     "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}},
]
SESSION = {
    "type": "realtime", "instructions": "You answer calls for Acme Outdoor.", "output_modalities": ["audio"],
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "noise_reduction": {"type": "near_field"},
                  "transcription": {"model": "gpt-transcribe", "language": "en"},
                  "turn_detection": {"type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 300,
                                     "silence_duration_ms": 500, "create_response": True,
                                     "interrupt_response": True}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
    "tools": TOOLS, "tool_choice": "auto",
}
KB_RESULT = {"results": [{"title": "Store hours", "source": "kb/hours.md", "score": 0.71,
                          "text": "We are open Monday to Friday from nine to six. "
                                  "On Saturday we open at ten in the morning and close at two."}]}


class RealtimeClient:
    def __init__(self, connection: ClientConnection, validate: Callable[[dict[str, Any]], None]) -> None:
        self.connection = connection
        self.validate = validate
        self.received: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(event))

    async def append_speech(self, mulaw: bytes) -> None:
        for offset in range(0, len(mulaw), 160):
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(mulaw[offset: offset + 160]).decode()})

    async def until(self, event_type: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Events received up to and including the next `event_type`."""
        import asyncio

        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while True:
                event = json.loads(await self.connection.recv())
                self.validate(event)
                self.received.append(event)
                got.append(event)
                if event["type"] == event_type:
                    return got


@asynccontextmanager
async def realtime(engine: Engine, validate: Callable[[dict[str, Any]], None]) -> AsyncIterator[RealtimeClient]:
    async with serve_engine(engine, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime-2.1", max_size=None) as conn:
            client = RealtimeClient(conn, validate)
            assert (await client.until("session.created"))[0]["session"]["type"] == "realtime"
            await client.send({"type": "session.update", "session": SESSION})
            updated = (await client.until("session.updated"))[-1]
            assert updated["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.9
            yield client


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")


async def test_a_spoken_question_is_answered_from_the_knowledge_tool(
    engine: Engine, validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    question = "What time do you open on Saturday?"
    async with realtime(engine, validate_server_event) as client:
        caller = b"\xff" * 8000 + engine.synthesizer.synthesize_mulaw(question) + b"\xff" * 8000
        await client.append_speech(caller)
        turn = await client.until("response.done")
        kinds = [e["type"] for e in turn]
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        started = next(e for e in turn if e["type"] == "input_audio_buffer.speech_started")
        assert 500 <= started["audio_start_ms"] <= 1200
        transcript = next(e for e in turn
                          if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert words(transcript["transcript"]) == words(question)
        assert transcript["item_id"] == started["item_id"]

        call = next(e for e in turn if e["type"] == "response.function_call_arguments.done")
        assert call["name"] == "get_knowledge"
        assert words(json.loads(call["arguments"])["query"]) == words(question)
        done = turn[-1]
        assert done["response"]["status"] == "completed"
        assert done["response"]["output"][0]["type"] == "function_call"

        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": call["call_id"], "output": json.dumps(KB_RESULT)}})
        await client.send({"type": "response.create"})
        # rate_limits.updated follows each response.done, as the service sends it.
        answer = [e for e in await client.until("response.done") if e["type"] != "rate_limits.updated"]
        kinds = [e["type"] for e in answer]
        assert kinds[:3] == ["conversation.item.added", "conversation.item.done", "response.created"]
        assert kinds[3:6] == ["response.output_item.added", "conversation.item.added",
                              "response.content_part.added"]
        assert kinds[-6:] == ["response.output_audio.done", "response.output_audio_transcript.done",
                              "response.content_part.done", "response.output_item.done",
                              "conversation.item.done", "response.done"]
        spoken = next(e for e in answer if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert spoken == "On Saturday we open at ten in the morning and close at two."
        audio = audio_of(answer)
        assert len(audio) > 8 * 1500
        usage = answer[-1]["response"]["usage"]
        assert usage["output_token_details"]["audio_tokens"] == len(audio) // 8 // 50
        # The agent's audio says what its transcript says.
        heard = await engine.run(lambda: engine.transcriber.transcribe_mulaw(audio))
        assert {"on", "saturday", "we", "open", "at", "close"} <= set(words(heard))


async def test_asking_for_a_person_calls_transfer_and_speaks_after_the_result(
    engine: Engine, validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    async with realtime(engine, validate_server_event) as client:
        await client.append_speech(b"\xff" * 4000 + engine.synthesizer.synthesize_mulaw(
            "Can I talk to a real person, please?") + b"\xff" * 8000)
        turn = await client.until("response.done")
        item = next(e for e in turn if e["type"] == "response.output_item.done")["item"]
        assert (item["type"], item["name"]) == ("function_call", "transfer_to_human")
        await client.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": item["call_id"], "output": '{"ok": true}'}})
        await client.send({"type": "response.create"})
        answer = await client.until("response.done")
        assert audio_of(answer)
        assert "connecting you" in answer[-1]["response"]["output"][0]["content"][0]["transcript"]


async def test_greeting_then_cancel_and_truncate(
    engine: Engine, validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    greeting = "Thanks for calling Acme Outdoor. We sell tents, boots and kayaks. How can I help you today?"
    async with realtime(engine, validate_server_event) as client:
        await client.send({"type": "response.create", "response": {
            "instructions": f'Greet the caller by saying: "{greeting}"'}})
        first = await client.until("response.output_audio.delta")
        item_id = first[-1]["item_id"]
        await client.send({"type": "response.cancel"})
        cancelled = await client.until("response.done")
        assert cancelled[-1]["response"]["status"] == "cancelled"
        assert cancelled[-1]["response"]["status_details"]["reason"] == "client_cancelled"
        delivered_ms = len(audio_of(first + cancelled)) // 8
        assert 0 < delivered_ms < 6000

        await client.send({"type": "response.cancel", "event_id": "evt_again"})
        error = (await client.until("error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == ("response_cancel_not_active", "evt_again")

        await client.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                           "audio_end_ms": delivered_ms + 1000})
        assert (await client.until("error"))[-1]["error"]["param"] == "audio_end_ms"
        await client.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                           "audio_end_ms": 200})
        truncated = (await client.until("conversation.item.truncated"))[-1]
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 200)

        # After the cancel the conversation takes new responses.
        await client.send({"type": "response.create", "response": {"instructions": "Say: Are you still there?"}})
        again = await client.until("response.done")
        assert again[-1]["response"]["status"] == "completed"
        assert again[-1]["response"]["output"][0]["content"][0]["transcript"] == "Are you still there?"


async def test_caller_speech_interrupts_the_agent_and_retrieve_returns_the_callers_audio(
    engine: Engine, validate_server_event: Callable[[dict[str, Any]], None],
) -> None:
    async with realtime(engine, validate_server_event) as client:
        await client.send({"type": "response.create", "response": {
            "instructions": "Say: Welcome to Acme Outdoor. Our stores are open every day except Sunday. "
                            "We also sell online. Ask me anything."}})
        await client.until("response.output_audio.delta")
        speech = engine.synthesizer.synthesize_mulaw("Sorry to interrupt.")
        caller = b"\xff" * 2000 + speech + b"\xff" * 6000
        await client.append_speech(caller)
        events = await client.until("input_audio_buffer.committed")
        kinds = [e["type"] for e in events]
        cancelled = next(e for e in events if e["type"] == "response.done")
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
        assert cancelled["response"]["status_details"]["reason"] == "turn_detected"
        committed = events[-1]
        await client.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
        retrieved = (await client.until("conversation.item.retrieved"))[-1]
        audio = base64.b64decode(retrieved["item"]["content"][0]["audio"])
        # The committed item is a contiguous cut of what the caller sent: padding, speech and hang-over.
        assert audio in caller
        assert 8 * 800 <= len(audio) <= len(speech) + 8 * 800

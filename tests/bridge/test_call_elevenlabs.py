"""ElevenLabs voices and transcription for the record, whole calls through the fakes (issue 7)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from switchboard.fakes.elevenlabs_server import FakeElevenLabs
from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio
from switchboard.fakes.transcription_servers import FakeCartesia, FakeScribe
from tests.bridge.harness import API_KEY, TENANT_YAML, voice_stack

ELEVEN_TENANT = TENANT_YAML.replace(
    "    voice: {provider: openai, name: marin, speed: 1.1}\n    transcriber: none\n",
    "    voice: {provider: elevenlabs, voice_id: voice123, model: eleven_flash_v2_5}\n    transcriber: cartesia\n",
    1,
)
LONG = ("Our return policy is simple: you can send back any unused item within thirty days of delivery, and we "
        "email you a prepaid label so the return costs you nothing at all, then refund your card within days. ")


def _media(caller: Any) -> list[tuple[float, str]]:
    return [(m.at_s, m.message["media"]["payload"]) for m in caller.received
            if isinstance(m.message, dict) and m.message.get("event") == "media"]


def _tts_audio(tts: Any) -> list[str]:
    return [m["audio"] for m in tts.sent if m.get("audio")]


async def _answered(stack: Any, caller: Any) -> Any:
    await caller.place_call(to="+15551230001", from_="+15557654321")
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    return session


def _vendors(eleven: FakeElevenLabs, stt: Any, prefix: str = "CARTESIA") -> dict[str, Any]:
    return {"ELEVENLABS_API_KEY": eleven.api_key, "ELEVENLABS_BASE_URL": eleven.base_url,
            f"{prefix}_API_KEY": stt.api_key, f"{prefix}_BASE_URL": stt.base_url}


async def test_the_model_writes_and_elevenlabs_speaks_its_audio_reaches_twilio_untouched(tmp_path: Path) -> None:
    async with FakeElevenLabs(chars_per_second=60) as eleven, FakeCartesia() as stt, \
            voice_stack(tmp_path, tenant_yaml=ELEVEN_TENANT, **_vendors(eleven, stt)) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        update = await session.wait_for_event("session.update", timeout_s=5)
        assert update["session"]["output_modalities"] == ["text"]
        tts = await eleven.wait_for_connection(timeout_s=5)
        assert tts.voice_id == "voice123" and tts.model_id == "eleven_flash_v2_5"
        assert tts.query["output_format"] == "ulaw_8000"
        init = await tts.wait_for_message(lambda m: "generation_config" in m, timeout_s=5)
        assert init["generation_config"]["chunk_length_schedule"] == [120, 160, 250, 290]
        greeting_text = await tts.wait_for_message(lambda m: m.get("flush") is True, timeout_s=5)
        assert greeting_text is not None
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
        # Every chunk ElevenLabs sent went to Twilio as one media message with the same payload, in order.
        assert [payload for _, payload in _media(caller)] == _tts_audio(tts)
        spoken = " ".join(c.text for c in tts.contexts.values()).strip()
        assert spoken == "This is the fake model speaking."
        conversation = await stack.conversation(caller.call_sid)
        assert conversation["messages"][0]["text"] == "This is the fake model speaking."
        assert tts.protocol_errors == [] and session.protocol_errors == []
        await caller.hang_up()


async def test_barge_in_mid_synthesis_closes_the_context_and_keeps_only_the_heard_text(tmp_path: Path) -> None:
    fake = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=200, transcript=LONG.strip()))
    async with FakeElevenLabs(chars_per_second=15) as eleven, FakeCartesia() as stt, \
            voice_stack(tmp_path, tenant_yaml=ELEVEN_TENANT, model=fake, **_vendors(eleven, stt)) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        tts = await eleven.wait_for_connection(timeout_s=5)
        await caller.wait_for(lambda: len(caller.heard_mulaw) >= 1500 * 8, timeout_s=15)
        await session.speech_started()
        clear = await caller.wait_for_message("clear", timeout_s=2)
        assert clear is not None
        [context_id] = list(tts.contexts)
        closed = await tts.wait_for_message(lambda m: m.get("close_context") is True, timeout_s=2)
        assert closed["context_id"] == context_id
        delete = await session.wait_for_event("conversation.item.delete", timeout_s=2)
        create = await session.wait_for_event(
            "conversation.item.create", timeout_s=2, predicate=lambda e: e["item"].get("role") == "assistant")
        heard_text = create["item"]["content"][0]["text"]
        assert delete["item_id"] and LONG.startswith(heard_text) and 5 < len(heard_text) < len(LONG) - 20
        # Nothing of the interrupted answer reaches the caller afterwards.
        await asyncio.sleep(0.5)
        clear_at = next(m.at_s for m in caller.received if isinstance(m.message, dict)
                        and m.message.get("event") == "clear")
        assert [at for at, _ in _media(caller) if at > clear_at] == []
        conversation = await stack.conversation(caller.call_sid)
        assert conversation["messages"][0]["text"] == heard_text
        await caller.hang_up()


async def test_an_elevenlabs_failure_falls_back_to_the_models_voice(tmp_path: Path) -> None:
    fake = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=600, transcript=LONG.strip()))
    # Slow generation: the socket drops while most of the answer is still unsynthesized.
    async with FakeElevenLabs(chars_per_second=50, next_chunk_delay_s=5.0) as eleven, FakeCartesia() as stt, \
            voice_stack(tmp_path, tenant_yaml=ELEVEN_TENANT, model=fake, **_vendors(eleven, stt)) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        tts = await eleven.wait_for_connection(timeout_s=5)
        await caller.wait_for(lambda: len(caller.heard_mulaw) >= 500 * 8, timeout_s=15)
        await tts.drop()
        back_to_audio = await session.wait_for_event(
            "session.update", after_index=1, timeout_s=5,
            predicate=lambda e: e["session"].get("output_modalities") == ["audio"])
        assert back_to_audio is not None
        rest = await session.wait_for_event(
            "response.create", after_index=1, timeout_s=5,
            predicate=lambda e: "Say exactly" in e.get("response", {}).get("instructions", ""))
        said = rest["response"]["instructions"]
        assert "refund your card" in said and not said.startswith("Say exactly this to the caller, and nothing else: \"Our")
        # The model's own audio follows what was already buffered: no silence because of the failure.
        deltas_before = len(_media(caller))
        await caller.wait_for(lambda: len(_media(caller)) > deltas_before + 3, timeout_s=10)
        assert not caller.is_stream_closed
        await caller.hang_up()


async def test_caller_turns_are_transcribed_off_the_critical_path_and_recorded_in_order(tmp_path: Path) -> None:
    speech = bytes([0x22]) * 1600
    async with FakeElevenLabs(chars_per_second=60) as eleven, FakeCartesia(delay_s=3.0) as stt, \
            voice_stack(tmp_path, tenant_yaml=ELEVEN_TENANT, **_vendors(eleven, stt)) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
        caller.say_mulaw(speech)
        await caller.wait_for_speech_sent(timeout_s=5)
        await session.speech_started()
        await session.speech_stopped()  # commits the turn; the fake answers it at once
        committed_at = asyncio.get_running_loop().time()
        retrieve = await session.wait_for_event("conversation.item.retrieve", timeout_s=5)
        # The answer is not held up by the (slow, 3 s) transcriber: its audio starts well before that.
        await caller.wait_for(lambda: caller.turns and caller.turns[-1].first_media_at_s is not None, timeout_s=5)
        assert caller.turns[-1].first_media_at_s - committed_at < 2.0
        request = await stt.wait_for_request(timeout_s=5)
        assert request.query["encoding"] == "pcm_mulaw" and request.query["sample_rate"] == "8000"
        retrieved = next(e for e in session.sent if e["type"] == "conversation.item.retrieved")
        audio_part = next(p for p in retrieved["item"]["content"] if p["type"] == "input_audio")
        assert request.audio == base64.b64decode(audio_part["audio"]) and retrieve["item_id"] == retrieved["item"]["id"]
        conversation = await stack.conversation(caller.call_sid)
        for _ in range(100):
            if len(conversation["messages"]) >= 3:
                break
            await asyncio.sleep(0.05)
            conversation = await stack.conversation(caller.call_sid)
        roles = [m["role"] for m in conversation["messages"]]
        assert roles == ["assistant", "user", "assistant"]  # the user turn sits before the answer it got
        assert conversation["messages"][1]["text"] == request.body["text"]
        await caller.hang_up()


async def test_a_failing_transcriber_records_the_turn_as_failed(tmp_path: Path) -> None:
    tenant = ELEVEN_TENANT.replace("transcriber: cartesia", "transcriber: elevenlabs")
    async with FakeElevenLabs(chars_per_second=60) as eleven, FakeScribe() as stt, \
            voice_stack(tmp_path, tenant_yaml=tenant, **_vendors(eleven, stt, "ELEVENLABS")) as stack, \
            stack.caller() as caller:
        stt.fail_with(503)
        session = await _answered(stack, caller)
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
        caller.say_mulaw(bytes([0x22]) * 1600)
        await caller.wait_for_speech_sent(timeout_s=5)
        await session.speech_started()
        await session.speech_stopped()
        await stt.wait_for_request(timeout_s=5)
        conversation = await stack.conversation(caller.call_sid)
        for _ in range(100):
            if any(m["role"] == "user" for m in conversation["messages"]):
                break
            await asyncio.sleep(0.05)
            conversation = await stack.conversation(caller.call_sid)
        users = [m["text"] for m in conversation["messages"] if m["role"] == "user"]
        assert users == ["[transcription failed]"]
        await caller.hang_up()


async def test_transcriber_openai_uses_the_sessions_own_input_transcription(tmp_path: Path) -> None:
    tenant = TENANT_YAML.replace("    transcriber: none\n", "    transcriber: openai\n", 1)
    async with voice_stack(tmp_path, tenant_yaml=tenant) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        update = await session.wait_for_event("session.update", timeout_s=5)
        assert update["session"]["audio"]["input"]["transcription"] == {"model": "gpt-transcribe"}
        await session.speech_started()
        await session.speech_stopped(transcript="where is my order")
        # The record opens once the stream is here (a pre-opened call records nothing before): poll for it.
        conversation: dict = {"messages": []}
        for _ in range(100):
            listed = (await stack.app_server.get("/api/conversations", params={"call_sid": caller.call_sid})).json()
            conversation = (listed["conversations"] or [conversation])[0]
            if any(m["role"] == "user" for m in conversation["messages"]):
                break
            await asyncio.sleep(0.05)
        assert [m["text"] for m in conversation["messages"] if m["role"] == "user"] == ["where is my order"]
        assert session.events_of("conversation.item.retrieve") == []
        await caller.hang_up()

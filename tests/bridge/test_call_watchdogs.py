"""Safety nets on the wire: inactivity prompt and hang-up, the call-length cap, a flood of frames.

The core's timers are tested with literal times in tests/bridge/call; here they run end to end with
sub-second settings, so each test takes about two seconds of real time.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio
from tests.bridge.harness import API_KEY, voice_stack, wait_until


async def _answered(stack: Any, caller: Any) -> Any:
    await caller.place_call(to="+15551230001", from_="+15557654321")
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    return session


def _instructions(session: Any) -> list[str]:
    return [e.get("response", {}).get("instructions", "") for e in session.events_of("response.create")]


async def test_silence_after_the_agent_finished_playing_prompts_then_says_goodbye_and_ends(tmp_path: Path) -> None:
    fake = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=300))
    async with voice_stack(tmp_path, model=fake, SWITCHBOARD_INACTIVITY_PROMPT_S=0.5,
                           SWITCHBOARD_INACTIVITY_HANGUP_S=0.5) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        prompt = await session.wait_for_event(
            "response.create", after_index=1, timeout_s=5,
            predicate=lambda e: "still there" in e["response"].get("instructions", ""))
        # Silence counts from the end of playback at the caller (the greeting's last mark), not from generation.
        greeting_played_at = max(m.at_s for m in caller.received if isinstance(m.message, dict)
                                 and m.message.get("event") == "mark")
        assert prompt is not None and greeting_played_at > 0
        goodbye = await session.wait_for_event(
            "response.create", after_index=session.received.index(prompt) + 1, timeout_s=5,
            predicate=lambda e: "goodbye" in e["response"].get("instructions", "").lower())
        assert goodbye is not None
        await caller.wait_for_stream_closed(timeout_s=5)
        assert not caller.has_unplayed_audio  # the goodbye was heard to its end
        request = await stack.twilio_rest.wait_for_request(timeout_s=5)
        assert request.form.get("Status") == "completed"
        await wait_until(lambda: stack.voice_app.state.registry.live_count == 0)
        assert stack.voice_app.state.metrics.registry.get_sample_value(
            "switchboard_calls_ended_total", {"reason": "inactivity"}) == 1


async def test_caller_speech_resets_the_inactivity_count(tmp_path: Path) -> None:
    fake = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=200))
    async with voice_stack(tmp_path, model=fake, SWITCHBOARD_INACTIVITY_PROMPT_S=0.8) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=5)
        await session.speech_started()  # the caller talks for a while: no prompt meanwhile
        await caller.wait_for(lambda: caller.stream_ms > 3000, timeout_s=5)
        assert not any("still there" in text for text in _instructions(session))
        await caller.hang_up()


async def test_the_call_wraps_up_before_the_cap_and_ends_at_it(tmp_path: Path) -> None:
    fake = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=200))
    async with voice_stack(tmp_path, model=fake, SWITCHBOARD_MAX_CALL_S=2.0, SWITCHBOARD_WRAP_UP_S=1.0) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        wrap = await session.wait_for_event(
            "response.create", after_index=1, timeout_s=5,
            predicate=lambda e: "time limit" in e["response"].get("instructions", ""))
        assert wrap is not None
        await caller.wait_for_stream_closed(timeout_s=5)
        assert 1.9 <= caller.stream_ms / 1000 <= 3.0
        await wait_until(lambda: stack.voice_app.state.registry.live_count == 0)
        assert stack.voice_app.state.metrics.registry.get_sample_value(
            "switchboard_calls_ended_total", {"reason": "max_duration"}) == 1


async def test_a_flood_of_frames_is_relayed_in_order_and_leaves_another_call_alone(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as flooder, stack.caller() as other:
        flood_session = await _answered(stack, flooder)
        other_session = await _answered(stack, other)
        payloads = [base64.b64encode(i.to_bytes(2, "big") * 80).decode() for i in range(1500)]
        for payload in payloads:  # 30 s of audio sent as fast as the socket takes it
            await flooder.send_raw(json.dumps(
                {"event": "media", "streamSid": flooder.stream_sid, "media": {"payload": payload}}))
        await wait_until(lambda: flood_session.append_count >= 1500 + 20, timeout_s=10)
        appended = [e["audio"] for e in flood_session.events_of("input_audio_buffer.append")
                    if e["audio"] in set(payloads)]
        assert appended == payloads  # none dropped, none reordered
        frame = base64.b64encode(bytes([0x55]) * 160).decode()
        other.say_mulaw(base64.b64decode(frame) * 5)
        await other.wait_for(lambda: sum(1 for e in other_session.events_of("input_audio_buffer.append")
                                         if e["audio"] == frame) == 5, timeout_s=5)
        assert not flooder.is_stream_closed and not other.is_stream_closed
        await flooder.hang_up()
        await other.hang_up()

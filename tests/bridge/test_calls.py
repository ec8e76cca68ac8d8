"""Whole calls through the fakes on 127.0.0.1: what Twilio's caller received and what the model received."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tests.bridge.harness import voice_stack, wait_until

# The Media Stream through our uvicorn protocol's direct text channel, and through plain ASGI (any server).
BOTH_STREAM_PATHS = pytest.mark.parametrize("ws_protocol", [None, "websockets-sansio"], ids=["direct", "asgi"])


def _payloads(messages: list[dict]) -> list[str]:
    return [m["media"]["payload"] for m in messages if m.get("event") == "media"]


@BOTH_STREAM_PATHS
async def test_answered_call_configures_session_greets_and_relays_audio_untouched(tmp_path: Path, ws_protocol: str | None) -> None:
    async with voice_stack(tmp_path, ws_protocol=ws_protocol) as stack, stack.caller() as caller:
        answer = await caller.place_call(to="+15551230001", from_="+15557654321")
        assert answer.status_code == 200
        # Per call: /twilio-stream/<replica>/<signed token> (contract §3).
        assert answer.stream_url is not None
        assert answer.stream_url.startswith(stack.voice_url.replace("http://", "ws://") + "/twilio-stream/")
        assert answer.stream_parameters == {
            "bot_profile_key": "acme-support", "is_sip_call": "false", "original_caller_number": "+15557654321",
        }
        session = await stack.model.wait_for_session(timeout_s=5)
        await caller.connect_stream()

        update = await session.wait_for_event("session.update", timeout_s=5)
        assert session.received[0]["type"] == "session.update"
        cfg = update["session"]
        assert cfg["type"] == "realtime"
        assert cfg["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert cfg["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert cfg["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert cfg["audio"]["input"]["turn_detection"]["threshold"] == 0.9
        assert cfg["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        assert cfg["audio"]["output"]["voice"] == "marin"
        assert cfg["audio"]["output"]["speed"] == 1.1
        assert "Acme Outdoor" in cfg["instructions"] and "source=PHONE" in cfg["instructions"]

        greeting = await session.wait_for_event("response.create", timeout_s=5)
        assert "Thanks for calling Acme Outdoor, how can I help?" in greeting["response"]["instructions"]

        # The greeting's audio reaches the caller delta for delta, then a mark follows the last media.
        await caller.wait_for(lambda: caller.stream_ms > 0 and not caller.has_unplayed_audio and any(
            m.event == "mark" for m in caller.received), timeout_s=10)
        sent_deltas = [e["delta"] for e in session.sent if e["type"] == "response.output_audio.delta"]
        received = [m.message for m in caller.received if isinstance(m.message, dict)]
        media = _payloads(received)
        (live_call,) = stack.voice_app.state.registry.calls.values()
        assert live_call.twilio is not None and live_call.twilio.direct is (ws_protocol is None)
        assert len(sent_deltas) >= 3
        assert media == sent_deltas  # one media per delta, same payload, same order
        last_media_index = max(i for i, m in enumerate(received) if m.get("event") == "media")
        assert any(m.get("event") == "mark" for m in received[last_media_index + 1:])

        # Caller audio: every frame appended unchanged and in order.
        frame = base64.b64encode(bytes([0x10]) * 160).decode()
        caller.say_mulaw(base64.b64decode(frame) * 5)
        await caller.wait_for(lambda: sum(
            1 for e in session.received if e["type"] == "input_audio_buffer.append" and e["audio"] == frame) >= 5,
            timeout_s=5)
        assert session.protocol_errors == []
        await caller.hang_up()
        await session.wait_for_closed(timeout_s=5)


async def test_unknown_number_and_no_credits_get_a_polite_hangup_and_no_model_session(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack:
        async with stack.caller() as caller:
            answer = await caller.place_call(to="+15550000000", from_="+15557654321")
            assert answer.status_code == 200 and answer.verbs == ("Say", "Hangup")
        async with stack.caller() as caller:
            answer = await caller.place_call(to="+15551230002", from_="+15557654321")
            assert answer.status_code == 200 and answer.verbs == ("Say", "Hangup")
        assert stack.model.sessions == []


async def test_bad_webhook_signature_is_403_and_bad_stream_signature_is_refused(tmp_path: Path) -> None:
    import httpx

    from switchboard.simulator.twilio_caller import StreamRejected

    async with voice_stack(tmp_path) as stack:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                stack.voice_url + "/twilio-voice-webhook", data={"CallSid": "CA1", "To": "+15551230001"},
                headers={"X-Twilio-Signature": "bogus"},
            )
        assert response.status_code == 403
        async with stack.caller() as caller:
            await caller.place_call(to="+15551230001", from_="+15557654321")
            try:
                await caller.connect_stream(signature="bogus")
            except StreamRejected as exc:
                assert exc.status_code == 403
            else:
                raise AssertionError("stream upgrade with a bad signature was accepted")


async def _answered(stack, caller):  # type: ignore[no-untyped-def]
    await caller.place_call(to="+15551230001", from_="+15557654321")
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    return session


@BOTH_STREAM_PATHS
async def test_barge_in_clears_cancels_and_truncates_to_what_the_caller_heard(tmp_path: Path, ws_protocol: str | None) -> None:
    from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio

    fake = FakeRealtimeServer(api_key="sk-test-not-a-real-key-0123456789", delta_interval_s=0.05,
                              default_script=stream_audio(ms=4000, transcript="one two three four five six seven eight"))
    async with voice_stack(tmp_path, model=fake, ws_protocol=ws_protocol) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        # Let the caller hear about 700 ms of the greeting while the model is still generating it.
        await caller.wait_for(lambda: len(caller.heard_mulaw) >= 700 * 8, timeout_s=10)
        assert session.active_response is not None
        sent_before = len([m for m in caller.received if isinstance(m.message, dict)
                           and m.message.get("event") == "media"])
        await session.speech_started()

        clear_at = await caller.wait_for_message("clear", timeout_s=2)
        cancel = await session.wait_for_event("response.cancel", timeout_s=2)
        truncate = await session.wait_for_event("conversation.item.truncate", timeout_s=2)
        assert cancel is not None
        deltas = [e["delta"] for e in session.sent
                  if e["type"] == "response.output_audio.delta" and e["item_id"] == truncate["item_id"]]
        heard_ms = caller.heard_ms_of(deltas)
        sent_ms = sum(len(base64.b64decode(delta)) for delta in deltas) / 8
        # Twilio's buffer was cleared: nothing more plays, and what was heard is final.
        await caller.wait_for_agent_quiet(quiet_s=0.5, timeout_s=5)
        assert caller.heard_ms_of(deltas) == heard_ms
        audio_end_ms = truncate["audio_end_ms"]
        assert 0 < audio_end_ms <= sent_ms and heard_ms <= sent_ms
        assert abs(heard_ms - audio_end_ms) <= 60  # the contract's tolerance
        assert truncate["content_index"] == 0
        # No audio of the cancelled response reached Twilio after the clear.
        messages = [m for m in caller.received if isinstance(m.message, dict)]
        clear_index = next(i for i, m in enumerate(messages) if m.message.get("event") == "clear")
        assert [m for m in messages[clear_index:] if m.message.get("event") == "media"] == []
        assert sent_before > 0 and clear_at is not None
        # The cancel may lose the race with the server's own interruption: that error never ends the call.
        assert not caller.is_stream_closed
        assert session.protocol_errors == []
        await caller.hang_up()


@BOTH_STREAM_PATHS
async def test_malformed_frames_do_not_affect_a_healthy_concurrent_call(tmp_path: Path, ws_protocol: str | None) -> None:
    async with voice_stack(tmp_path, ws_protocol=ws_protocol) as stack, stack.caller() as bad, stack.caller() as good:
        bad_session = await _answered(stack, bad)
        good_session = await _answered(stack, good)
        for junk in ["{not json", "[]", '{"event":"media","media":{"payload":"%%%"}}', '{"event":"warp"}',
                     '{"event":"media"}', "x" * 100_000, '{"event":"start","start":{}}']:
            await bad.send_raw(junk)
        frame = base64.b64encode(bytes([0x22]) * 160).decode()
        good.say_mulaw(base64.b64decode(frame) * 10)
        await good.wait_for(lambda: sum(1 for e in good_session.received if e["type"] == "input_audio_buffer.append"
                                        and e["audio"] == frame) >= 10, timeout_s=5)
        # The bad call is still up and still relays good frames after the junk.
        bad.say_mulaw(base64.b64decode(frame) * 3)
        await bad.wait_for(lambda: sum(1 for e in bad_session.received if e["type"] == "input_audio_buffer.append"
                                       and e["audio"] == frame) >= 3, timeout_s=5)
        assert not bad.is_stream_closed and not good.is_stream_closed
        metrics = stack.voice_app.state.metrics.registry
        assert metrics.get_sample_value("switchboard_bad_frames_total", {"peer": "twilio", "kind": "malformed_json"}) == 1
        assert metrics.get_sample_value("switchboard_bad_frames_total", {"peer": "twilio", "kind": "bad_base64"}) == 1
        await bad.hang_up()
        await good.hang_up()


async def test_model_socket_drop_reconnects_and_replays_the_conversation(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.wait_for_event("response.create", timeout_s=5)
        await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
        await session.drop()
        second = await stack.model.wait_for_session(timeout_s=5)
        update = await second.wait_for_event("session.update", timeout_s=5)
        assert second.received[0] is update and update["session"]["instructions"]
        replay = await second.wait_for_event("conversation.item.create", timeout_s=5)
        assert replay["item"]["role"] == "assistant"
        assert replay["item"]["content"][0]["text"] == "This is the fake model speaking."
        # No second greeting; the call goes on: caller audio reaches the new session.
        frame = base64.b64encode(bytes([0x44]) * 160).decode()
        caller.say_mulaw(base64.b64decode(frame) * 5)
        await caller.wait_for(lambda: sum(1 for e in second.received if e["type"] == "input_audio_buffer.append"
                                          and e["audio"] == frame) >= 5, timeout_s=5)
        assert second.events_of("response.create") == []
        assert not caller.is_stream_closed and second.protocol_errors == []
        assert stack.voice_app.state.metrics.registry.get_sample_value("switchboard_model_reconnects_total") == 1
        await caller.hang_up()


async def test_unrecoverable_model_apologises_and_transfers_the_caller(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_MODEL_RECONNECT_WINDOW_S=0.6) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.wait_for_event("response.create", timeout_s=5)
        await stack.model.aclose()  # the model service is gone: every reconnect attempt is refused
        request = await stack.twilio_rest.wait_for_request(timeout_s=10)
        twiml = request.form["Twiml"]
        assert "<Say>" in twiml and "technical trouble" in twiml
        assert re.search(r'<Dial [^>]*callerId="\+15557654321"[^>]*><Number [^>]*>\+15559990000</Number></Dial>', twiml)
        await caller.wait_for_stream_closed(timeout_s=5)
        registry = stack.voice_app.state.registry
        await wait_until(lambda: registry.live_count == 0)
        assert stack.voice_app.state.metrics.registry.get_sample_value(
            "switchboard_calls_ended_total", {"reason": "transferred"}) == 1


@BOTH_STREAM_PATHS
async def test_twilio_stop_closes_the_model_session(tmp_path: Path, ws_protocol: str | None) -> None:
    async with voice_stack(tmp_path, ws_protocol=ws_protocol) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.wait_for_event("response.create", timeout_s=5)
        await caller.hang_up()
        await session.wait_for_closed(timeout_s=5)
        assert stack.voice_app.state.metrics.registry.get_sample_value(
            "switchboard_calls_ended_total", {"reason": "caller_hung_up"}) == 1


async def test_admission_control_answers_busy_above_the_cap_and_reports_not_ready(tmp_path: Path) -> None:
    import httpx

    async with voice_stack(tmp_path, SWITCHBOARD_MAX_CALLS=1) as stack, stack.caller() as first, \
            stack.caller() as second, httpx.AsyncClient(base_url=stack.voice_url) as http:
        assert (await http.get("/health-check/ready")).status_code == 200
        await _answered(stack, first)
        assert (await http.get("/health-check/ready")).status_code == 503
        busy = await second.place_call(to="+15551230001", from_="+15557650000")
        assert busy.status_code == 200 and busy.verbs == ("Say", "Hangup") and "busy" in busy.said[0]
        await first.hang_up()
        await wait_until(lambda: stack.voice_app.state.registry.live_count == 0)
        assert (await http.get("/health-check/ready")).status_code == 200


async def test_minutes_used_are_charged_to_the_tenant_once_when_the_call_ends(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        await _answered(stack, caller)
        await caller.wait_for(lambda: caller.stream_ms >= 300, timeout_s=5)
        await caller.hang_up()
        await wait_until(lambda: stack.voice_app.state.registry.live_count == 0)
        knowledge = stack.voice_app.state.knowledge
        again = await knowledge.charge_call(bot_profile_key="acme-support", call_sid=caller.call_sid, duration_s=999)
        assert again["already_charged"] is True and again["minutes"] == 1
        assert again["credits_remaining"] == 499


async def test_ai_server_down_uses_the_last_good_profile_and_with_none_apologises(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack:
        assert stack.ai_network is not None
        stack.ai_network.is_down = True
        async with stack.caller() as first:
            answer = await first.place_call(to="+15551230001", from_="+15557654321")
            assert answer.verbs == ("Say", "Hangup")  # nothing cached yet: a polite apology, no session
        assert stack.model.sessions == []
        stack.ai_network.is_down = False
        async with stack.caller() as second:
            await _answered(stack, second)  # a good call fills the cache
            await second.hang_up()
        stack.ai_network.is_down = True
        async with stack.caller() as third:
            answer = await third.place_call(to="+15551230001", from_="+15557650003")
            assert answer.stream_parameters["bot_profile_key"] == "acme-support"
            session = await stack.model.wait_for_session(timeout_s=5)
            await third.connect_stream()
            update = await session.wait_for_event("session.update", timeout_s=5)
            instructions = update["session"]["instructions"]
            # The cached profile speaks to this caller, not the one it was built for.
            assert "+15557650003" in instructions and "+15557654321" not in instructions
            assert [t["name"] for t in update["session"]["tools"]][:1] == ["get_knowledge"]
            await session.wait_for_event("response.create", timeout_s=5)
            await third.hang_up()


@BOTH_STREAM_PATHS
async def test_callers_who_cut_the_connection_right_after_stop_do_not_disturb_the_server(
    tmp_path: Path, ws_protocol: str | None,
) -> None:
    """`stop` then the TCP connection cut, no close handshake: the call ends as a hang-up, and the server
    (its lifespan TaskGroup, every other call) carries on. A bench found the direct path's close raising here."""
    async with voice_stack(tmp_path, ws_protocol=ws_protocol) as stack:
        for _ in range(3):
            async with stack.caller() as caller:
                session = await _answered(stack, caller)
                await session.wait_for_event("response.create", timeout_s=5)
                await caller.wait_for(lambda: caller.stream_ms > 0, timeout_s=5)
                await caller.drop_connection()
                await session.wait_for_closed(timeout_s=5)
        registry = stack.voice_app.state.metrics.registry
        await wait_until(lambda: registry.get_sample_value(
            "switchboard_calls_ended_total", {"reason": "caller_hung_up"}) == 3)
        # The server still answers and greets.
        async with stack.caller() as caller:
            session = await _answered(stack, caller)
            await session.wait_for_event("response.create", timeout_s=5)
            await caller.wait_for(lambda: caller.stream_ms > 0, timeout_s=5)
            await caller.hang_up()
        assert registry.get_sample_value("switchboard_calls_ended_total", {"reason": "internal_error"}) is None
        assert stack.voice_app.state.registry.tasks is not None  # the lifespan's TaskGroup is still running

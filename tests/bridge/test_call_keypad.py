"""The keypad and per-tenant turn detection on the wire: `dtmf` messages exactly as Twilio sends them, what the
fake model received, what the caller got, and what the App server recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio
from tests.bridge.harness import API_KEY, TENANT_YAML, voice_stack, wait_until

CALLER = "+15557654321"
TYPED = "(typed on the phone keypad) "


async def _answered(stack: Any, caller: Any) -> Any:
    await caller.place_call(to="+15551230001", from_=CALLER)
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    await session.wait_for_sent("response.done", timeout_s=10)
    return session


async def _press(caller: Any, keys: str, gap_s: float = 0.05) -> None:
    for key in keys:
        await caller.send_dtmf(key)
        await asyncio.sleep(gap_s)


def _user_text_items(session: Any) -> list[dict[str, Any]]:
    return [e for e in session.events_of("conversation.item.create")
            if e["item"].get("role") == "user" and e["item"]["content"][0]["type"] == "input_text"]


async def test_a_key_interrupts_the_agent_and_the_digits_reach_the_model_as_one_message(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_DTMF_PAUSE_MS=300) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        response = await session.start_response(stream_audio(ms=4000, transcript="Let me tell you all about it."))
        await caller.wait_for(lambda: len(caller.heard_mulaw) > 8 * 300, timeout_s=5)
        clears_before = caller.clears
        responses_before = len(session.events_of("response.create"))

        await _press(caller, "4512")

        # The first key interrupted exactly as speech does: clear at the caller, cancel at the model.
        await caller.wait_for(lambda: caller.clears > clears_before, timeout_s=2)
        cancel = await session.wait_for_event("response.cancel", timeout_s=2)
        assert cancel.get("response_id") in (None, response.response_id)
        truncate = await session.wait_for_event("conversation.item.truncate", timeout_s=2)
        assert 0 < truncate["audio_end_ms"] <= 4000
        # After the pause: one user message with the digits in order, then one response.create.
        item = await session.wait_for_event(
            "conversation.item.create", timeout_s=3,
            predicate=lambda e: e["item"].get("role") == "user")
        assert item["item"]["content"] == [{"type": "input_text", "text": TYPED + "4512"}]
        follow_up = await session.wait_for_event("response.create", after_index=session.received.index(item),
                                                 timeout_s=3)
        assert "instructions" not in follow_up["response"]
        assert len(session.events_of("response.create")) == responses_before + 1
        assert len(_user_text_items(session)) == 1
        assert session.protocol_errors == []

        await wait_until(lambda: bool(stack.outbox.delivered_count), timeout_s=5)
        conversation = await stack.conversation(caller.call_sid)
        for _ in range(100):
            if any(m["role"] == "user" for m in conversation["messages"]):
                break
            await asyncio.sleep(0.05)
            conversation = await stack.conversation(caller.call_sid)
        assert {"role": "user", "text": TYPED + "4512"}.items() <= next(
            m for m in conversation["messages"] if m["role"] == "user").items()
        await caller.hang_up()


async def test_hash_sends_at_once_keeping_star_and_a_second_run_is_a_second_message(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_DTMF_PAUSE_MS=5000) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await _press(caller, "12*9#")
        first = await session.wait_for_event("conversation.item.create", timeout_s=2,
                                             predicate=lambda e: e["item"].get("role") == "user")
        assert first["item"]["content"][0]["text"] == TYPED + "12*9"  # long before the 5 s pause
        await session.wait_for_event("response.create", after_index=session.received.index(first), timeout_s=3)
        await wait_until(lambda: session.active_response is None, timeout_s=5)
        await _press(caller, "7#")
        await wait_until(lambda: len(_user_text_items(session)) == 2, timeout_s=3)
        assert _user_text_items(session)[1]["item"]["content"][0]["text"] == TYPED + "7"
        await caller.hang_up()


async def test_a_dtmf_message_twilio_would_not_send_is_counted_and_dropped(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_DTMF_PAUSE_MS=200) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await caller.send_raw(json.dumps({"event": "dtmf", "sequenceNumber": "99", "streamSid": caller.stream_sid,
                                          "dtmf": {"track": "inbound_track", "digit": "12"}}))
        await asyncio.sleep(0.5)
        assert _user_text_items(session) == []
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(stack.voice_url + "/metrics")).text
        assert 'switchboard_bad_frames_total{kind="bad_dtmf",peer="twilio"} 1.0' in metrics
        await caller.hang_up()


async def test_a_mapped_key_transfers_at_once_without_the_model(tmp_path: Path) -> None:
    tenant = TENANT_YAML.replace("    credits: 500\n", '    credits: 500\n    keypad: {"0": transfer}\n', 1)
    async with voice_stack(tmp_path, tenant_yaml=tenant) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        responses_before = len(session.events_of("response.create"))
        await caller.send_dtmf("0")
        request = await stack.twilio_rest.wait_for_request(timeout_s=5)
        twiml = request.form["Twiml"]
        assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Say>')
        assert 'callerId="+15557654321"' in twiml and ">+15559990000</Number>" in twiml
        assert len(session.events_of("response.create")) == responses_before  # no model turn
        assert "pressing 0 on its own transfers" in session.events_of("session.update")[0]["session"]["instructions"]
        await caller.hang_up()


async def test_the_tenants_turn_detection_goes_into_session_update_as_given(tmp_path: Path) -> None:
    patient = TENANT_YAML.replace(
        "    credits: 500\n",
        "    credits: 500\n    turn_detection: {type: server_vad, threshold: 0.7, silence_duration_ms: 1500}\n", 1)
    async with voice_stack(tmp_path, tenant_yaml=patient) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        update = session.events_of("session.update")[0]["session"]
        assert update["audio"]["input"]["turn_detection"] == {
            "type": "server_vad", "threshold": 0.7, "silence_duration_ms": 1500}
        assert "type digits on their phone keypad" in update["instructions"]
        await caller.hang_up()


async def test_key_tones_in_the_audio_cause_no_second_barge_in_and_no_answer_to_the_beeps(tmp_path: Path) -> None:
    # The fake model's energy VAD hears the tones Twilio plays into the caller's audio as speech (as a
    # provider's VAD may): speech_started, a committed turn, and a response of its own.
    model = FakeRealtimeServer(api_key=API_KEY, energy_vad=True)
    model.on("response.create", stream_audio(ms=1500, transcript="Order 45 shipped yesterday."))
    async with voice_stack(tmp_path, model=model, SWITCHBOARD_DTMF_PAUSE_MS=3000) as stack, \
            stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.start_response(stream_audio(ms=4000, transcript="Let me tell you all about it."))
        await caller.wait_for(lambda: len(caller.heard_mulaw) > 8 * 300, timeout_s=5)

        sent_before_keys = len(session.sent)
        await caller.press_keys("45#")  # real DTMF tones in the audio, and Twilio's dtmf messages
        [keyed] = await _wait_user_items(session, 1)
        assert keyed["item"]["content"][0]["text"] == TYPED + "45"
        asked_at = session.received.index(keyed)
        ours = await session.wait_for_event("response.create", after_index=asked_at, timeout_s=3)
        # The VAD's turn of beeps ends after its silence: it is dropped from the conversation, and the response
        # the VAD started for it (if any) is cancelled; the answer to the digits plays in full.
        started = await session.wait_for_sent("input_audio_buffer.speech_started", timeout_s=5,
                                              after_index=sent_before_keys)
        committed = await session.wait_for_sent("input_audio_buffer.committed", timeout_s=5,
                                                after_index=session.sent.index(started))
        await session.wait_for_event("conversation.item.delete", timeout_s=3,
                                     predicate=lambda e: e["item_id"] == committed["item_id"])
        answer = await session.wait_for_sent(
            "response.done", timeout_s=5,
            predicate=lambda e: e["response"]["metadata"] is not None
            and e["response"]["metadata"].get("switchboard_request_id") == ours["event_id"])
        assert answer["response"]["status"] == "completed"
        clears_after_keys = caller.clears
        await caller.wait_for(lambda: not caller.has_unplayed_audio and len(caller.heard_mulaw) > 0, timeout_s=5)
        assert caller.clears == clears_after_keys  # nothing cut the answer to the digits
        ours_and_vads = [e for e in session.received[asked_at:] if e["type"] == "response.create"]
        assert ours_and_vads == [ours]  # the bridge asked once
        assert _user_text_items(session) == [keyed]
        await caller.hang_up()


async def _wait_user_items(session: Any, count: int) -> list[dict[str, Any]]:
    await wait_until(lambda: len(_user_text_items(session)) >= count, timeout_s=5)
    return _user_text_items(session)


async def test_a_repeated_dtmf_message_is_one_key_press(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_DTMF_PAUSE_MS=300) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        pressed = {"event": "dtmf", "sequenceNumber": "900", "streamSid": caller.stream_sid,
                   "dtmf": {"track": "inbound_track", "digit": "4"}}
        await caller.send_raw(json.dumps(pressed))
        await caller.send_raw(json.dumps(pressed))  # the same message twice: same stream, same sequenceNumber
        await caller.send_raw(json.dumps({**pressed, "sequenceNumber": "899"}))  # older than one already seen
        await caller.send_raw(json.dumps({**pressed, "sequenceNumber": "901", "dtmf": {**pressed["dtmf"], "digit": "5"}}))
        await caller.send_raw(json.dumps({**pressed, "sequenceNumber": "902", "dtmf": {**pressed["dtmf"], "digit": "#"}}))

        item = await session.wait_for_event("conversation.item.create", timeout_s=3,
                                            predicate=lambda e: e["item"].get("role") == "user")
        await session.wait_for_event("response.create", after_index=session.received.index(item), timeout_s=3)
        assert [item["item"]["content"][0]["text"] for item in _user_text_items(session)] == [TYPED + "45"]
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(stack.voice_url + "/metrics")).text
        assert 'switchboard_bad_frames_total{kind="duplicate_dtmf",peer="twilio"} 2.0' in metrics
        await caller.hang_up()


async def test_keys_typed_before_the_model_session_opened_are_answered_after_the_greeting(tmp_path: Path) -> None:
    slow = FakeRealtimeServer(api_key=API_KEY, session_created_delay_s=1.0)  # the model's session is slow to open
    async with voice_stack(tmp_path, model=slow, SWITCHBOARD_DTMF_PAUSE_MS=200) as stack, stack.caller() as caller:
        await caller.place_call(to="+15551230001", from_=CALLER)
        await caller.connect_stream()
        await _press(caller, "42#")  # typed while the session is still opening
        session = await stack.model.wait_for_session(timeout_s=5)

        greeting = await session.wait_for_event("response.create", timeout_s=5)
        assert "Thanks for calling Acme Outdoor" in greeting["response"]["instructions"]
        assert _user_text_items(session) == []  # nothing of the keypad before the greeting's request
        await session.wait_for_sent("response.done", timeout_s=10)
        item = await session.wait_for_event("conversation.item.create", timeout_s=5,
                                            predicate=lambda e: e["item"].get("role") == "user")
        assert item["item"]["content"] == [{"type": "input_text", "text": TYPED + "42"}]
        assert session.received.index(greeting) < session.received.index(item)
        answer = await session.wait_for_event("response.create", after_index=session.received.index(item), timeout_s=5)
        assert "instructions" not in answer["response"]
        assert session.protocol_errors == []
        await caller.hang_up()

"""Warm transfer on the wire: the REST update's `<Dial>`, the whisper Twilio fetches when the person answers,
the `action` Twilio posts when nobody does (callback ticket, goodbye, hang-up), both signed as Twilio signs,
answered by any voice server, and the outcome on the record."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from switchboard.bridge.adapters.tickets_client import AppServerOutbox
from switchboard.bridge.app import create_app as create_voice_app
from switchboard.fakes.realtime_server import function_call
from tests.bridge.harness import AUTH_TOKEN, SERVICE_TOKEN, TENANT_YAML, voice_stack

CALLER = "+15557654321"
SUMMARY = "Order A-1001 arrived damaged; the caller wants a replacement before Friday."


async def _transfer(stack: Any, caller: Any) -> Any:
    await caller.place_call(to="+15551230001", from_=CALLER)
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    await session.wait_for_sent("response.done", timeout_s=10)
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
    await session.start_response(function_call("transfer_to_human", {"reason": "damaged order", "summary": SUMMARY}))
    return await stack.twilio_rest.wait_for_request(timeout_s=10)


async def _messages_until(stack: Any, call_sid: str, predicate: Any) -> list[dict[str, Any]]:
    for _ in range(100):
        conversation = await stack.conversation(call_sid)
        if predicate(conversation["messages"]):
            return list(conversation["messages"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the record never matched: {conversation['messages']}")


def _transfer_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in messages if m["role"] == "tool" and m["name"] == "transfer_to_human")


async def test_the_tool_asks_for_a_summary_beside_the_reason(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        await caller.place_call(to="+15551230001", from_=CALLER)
        session = await stack.model.wait_for_session(timeout_s=5)
        update = await session.wait_for_event("session.update", timeout_s=5)
        [tool] = [t for t in update["session"]["tools"] if t["name"] == "transfer_to_human"]
        assert set(tool["parameters"]["properties"]) == {"reason", "summary"}
        await caller.hang_up()


async def test_nobody_answers_the_caller_hears_so_gets_a_callback_ticket_and_the_call_ends(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "no-answer"
        request = await _transfer(stack, caller)

        dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
        assert dial is not None
        assert dial.get("callerId") == CALLER and dial.get("timeout") == "20"
        number = dial.find("Number")
        assert number is not None and number.text == "+15559990000"
        action_url, whisper_url = dial.get("action") or "", number.get("url") or ""
        assert action_url.startswith(stack.voice_url + "/twilio-dial/action/")
        assert whisper_url.startswith(stack.voice_url + "/twilio-dial/whisper/")
        # What the callbacks need travels sealed: neither the number nor the summary shows in the URLs.
        for url in (action_url, whisper_url):
            assert "5557654321" not in url and "damaged" not in url and "?" not in url

        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)
        assert leg.dial_call_status == "no-answer" and leg.whisper_twiml is None
        assert leg.action_status_code == 200
        answer = ElementTree.fromstring(leg.action_twiml or "")
        assert "nobody is free" in (answer.findtext("Say") or "") and "call you back" in (answer.findtext("Say") or "")
        assert answer.find("Hangup") is not None
        assert stack.twilio_rest.call_status(caller.call_sid) == "completed"

        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["kind"] == "callback" and ticket["phone_number"] == CALLER
        assert SUMMARY in ticket["reason"] and "no-answer" in ticket["reason"]

        messages = await _messages_until(stack, caller.call_sid, lambda ms: any(
            m["role"] == "tool" and "not_answered" in (m.get("result") or "") for m in ms))
        transfer = _transfer_message(messages)
        assert transfer["arguments"]["summary"] == SUMMARY
        result = json.loads(transfer["result"])
        assert result["status"] == "not_answered" and result["dial_call_status"] == "no-answer"
        assert result["summary"] == SUMMARY and result["callback_ticket_id"] == ticket["id"]
        conversation = await stack.conversation(caller.call_sid)
        assert conversation["end_reason"] == "transferred" and conversation["summary"] == SUMMARY


@pytest.mark.parametrize("dial_call_status", ["busy", "failed"])
async def test_busy_or_failed_also_ends_in_a_callback(tmp_path: Path, dial_call_status: str) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = dial_call_status
        await _transfer(stack, caller)
        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)
        assert "nobody is free" in (leg.action_twiml or "")
        [ticket] = await stack.tickets(caller.call_sid)
        assert dial_call_status in ticket["reason"]


async def test_the_person_who_answers_hears_who_is_calling_and_why_then_the_call_is_bridged(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "answers"
        await _transfer(stack, caller)
        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)

        assert leg.whisper_status_code == 200
        whisper = ElementTree.fromstring(leg.whisper_twiml or "")
        said = whisper.findtext("Say") or ""
        assert "Acme Outdoor" in said and SUMMARY in said and "damaged order" in said
        assert " ".join(CALLER) in said  # the number, spoken digit by digit
        assert whisper.find("Hangup") is None and whisper.find("Dial") is None  # then they are connected
        assert leg.dial_call_status == "completed"
        assert ElementTree.fromstring(leg.action_twiml or "").find("Hangup") is not None
        assert await stack.tickets(caller.call_sid) == []

        messages = await _messages_until(stack, caller.call_sid, lambda ms: any(
            m["role"] == "tool" and '"answered"' in (m.get("result") or "") for m in ms))
        result = json.loads(_transfer_message(messages)["result"])
        assert result["ok"] is True and result["status"] == "answered" and result["summary"] == SUMMARY


async def test_callbacks_are_refused_without_twilios_signature_and_for_another_purpose(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "answers"
        request = await _transfer(stack, caller)
        await stack.twilio_rest.wait_for_dial(timeout_s=10)
        dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
        assert dial is not None
        action_url = dial.get("action") or ""
        whisper_url = dial.find("Number").get("url") or ""  # type: ignore[union-attr]
        params = {"CallSid": caller.call_sid, "DialCallStatus": "no-answer", "DialBridged": "false"}
        validator = RequestValidator(AUTH_TOKEN)
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(action_url, data=params, headers={"X-Twilio-Signature": "bad"})
            assert unsigned.status_code == 403
            # Signed over other parameters than those posted: refused too.
            tampered = await http.post(action_url, data={**params, "DialCallStatus": "busy"},
                                       headers={"X-Twilio-Signature": validator.compute_signature(action_url, params)})
            assert tampered.status_code == 403
            # A whisper token on the action path (signed by Twilio over that URL) is not an action token.
            swapped = action_url.rsplit("/", 1)[0] + "/" + whisper_url.rsplit("/", 1)[1]
            wrong_purpose = await http.post(swapped, data=params,
                                            headers={"X-Twilio-Signature": validator.compute_signature(swapped, params)})
            assert wrong_purpose.status_code == 404
        assert await stack.tickets(caller.call_sid) == []


async def test_the_action_is_answered_by_another_voice_server_of_the_deployment(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "answers"  # this server's own leg ends bridged; the replica gets a no-answer
        request = await _transfer(stack, caller)
        await stack.twilio_rest.wait_for_dial(timeout_s=10)
        dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
        assert dial is not None
        action_url = dial.get("action") or ""
        # A second voice server with the same settings and no memory of the call (its own process state).
        outbox_http = httpx.AsyncClient(transport=stack.app_network)
        replica = create_voice_app(stack.settings, recorder=AppServerOutbox(
            "http://app.internal", SERVICE_TOKEN, spool_dir=tmp_path / "replica-outbox", http_client=outbox_http))
        params = {"AccountSid": "AC" + "0" * 32, "CallSid": caller.call_sid, "DialCallStatus": "no-answer",
                  "DialBridged": "false", "From": CALLER, "To": "+15551230001"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(action_url, params)
        async with outbox_http, replica.router.lifespan_context(replica), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=replica), base_url=stack.voice_url) as http:
            answer = await http.post(action_url.removeprefix(stack.voice_url), data=params,
                                     headers={"X-Twilio-Signature": signature})
        assert answer.status_code == 200 and "nobody is free" in answer.text
        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["phone_number"] == CALLER and SUMMARY in ticket["reason"]


def _signed_action(request: Any, call_sid: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The `<Dial action>` of the REST update, with a no-answer signed as Twilio signs it."""
    dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
    assert dial is not None
    action_url = dial.get("action") or ""
    params = {"AccountSid": "AC" + "0" * 32, "CallSid": call_sid, "DialCallStatus": "no-answer",
              "DialBridged": "false", "From": CALLER, "To": "+15551230001"}
    return action_url, params, {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(action_url, params)}


async def test_a_retried_action_makes_no_second_callback_ticket(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "no-answer"
        request = await _transfer(stack, caller)
        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)
        assert leg.action_status_code == 200
        [ticket] = await stack.tickets(caller.call_sid)

        # Twilio retries the webhook (it timed out on its side, say): same URL, same signed parameters.
        action_url, params, headers = _signed_action(request, caller.call_sid)
        async with httpx.AsyncClient() as http:
            retried = await http.post(action_url, data=params, headers=headers)
        assert retried.status_code == 200 and "nobody is free" in retried.text  # the caller's answer may repeat
        assert await stack.tickets(caller.call_sid) == [ticket]


async def test_a_callback_ticket_made_while_the_app_server_is_down_arrives_once_it_is_back(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        stack.twilio_rest.human = "no-answer"
        stack.app_network.is_down = True  # the voice server cannot reach the App server from here on
        request = await _transfer(stack, caller)
        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)
        assert leg.action_status_code == 200 and "nobody is free" in (leg.action_twiml or "")
        assert stack.twilio_rest.call_status(caller.call_sid) == "completed"
        # Twilio retries the action meanwhile: still one ticket in the end.
        action_url, params, headers = _signed_action(request, caller.call_sid)
        async with httpx.AsyncClient() as http:
            assert (await http.post(action_url, data=params, headers=headers)).status_code == 200
        await asyncio.sleep(0.3)  # several outbox retries against the dead App server
        assert await stack.tickets(caller.call_sid) == []

        stack.app_network.is_down = False
        assert await stack.outbox.wait_until_idle(timeout_s=10)
        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["kind"] == "callback" and ticket["phone_number"] == CALLER
        assert SUMMARY in ticket["reason"] and "no-answer" in ticket["reason"]
        messages = await _messages_until(stack, caller.call_sid, lambda ms: any(
            m["role"] == "tool" and "not_answered" in (m.get("result") or "") for m in ms))
        assert json.loads(_transfer_message(messages)["result"])["callback_ticket"] == "queued"


async def test_the_callback_left_when_the_model_is_lost_survives_an_app_server_outage(tmp_path: Path) -> None:
    no_transfer = TENANT_YAML.replace('    transfer: {number: "+15559990000", caller_id: "+15551230001"}\n', "")
    assert no_transfer != TENANT_YAML
    async with voice_stack(tmp_path, tenant_yaml=no_transfer, SWITCHBOARD_MODEL_RECONNECT_WINDOW_S=0.6) as stack, \
            stack.caller() as caller:
        await caller.place_call(to="+15551230001", from_=CALLER)
        session = await stack.model.wait_for_session(timeout_s=5)
        await caller.connect_stream()
        await session.wait_for_event("response.create", timeout_s=5)
        stack.app_network.is_down = True
        await stack.model.aclose()  # the model is gone for good, and there is nobody to transfer to
        request = await stack.twilio_rest.wait_for_request(timeout_s=10)
        assert "<Say>" in request.form["Twiml"] and "<Dial" not in request.form["Twiml"]
        assert await stack.tickets(caller.call_sid) == []

        stack.app_network.is_down = False
        assert await stack.outbox.wait_until_idle(timeout_s=10)
        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["phone_number"] == CALLER and "unavailable" in ticket["reason"]

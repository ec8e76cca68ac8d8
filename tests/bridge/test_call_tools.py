"""Tools mid-call, on the wire: background execution, thinking sound, results, transfers, tickets,
end_call, and an App server outage that loses nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from switchboard.bridge.sounds import thinking_sound_payloads
from switchboard.fakes.realtime_server import function_call, stream_audio
from tests.bridge.harness import TENANT_YAML, serve_on_loopback, voice_stack, wait_until

CALLER = "+15557654321"


def _dicts(caller: Any) -> list[dict[str, Any]]:
    return [m.message for m in caller.received if isinstance(m.message, dict)]


def _tool_app(delay_s: float) -> FastAPI:
    app = FastAPI()

    @app.post("/lookup")
    async def lookup(body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay_s)
        return {"order_number": body.get("order_number"), "status": "shipped", "eta": "Friday"}

    return app


def _tenant_with_tool(url: str) -> str:
    return TENANT_YAML.replace(
        "    credits: 500\n",
        "    credits: 500\n"
        "    knowledge:\n"
        "      - text: \"Stores are closed on public holidays. Returns are free within 30 days.\"\n"
        "        title: Policies\n"
        "    tools:\n"
        "      - name: lookup_order\n"
        "        description: \"Look up an order by its number.\"\n"
        "        parameters: {type: object, properties: {order_number: {type: string}}, required: [order_number]}\n"
        f"        http: {{method: POST, url: \"{url}\", allow_private_network: true, timeout_s: 10}}\n",
        1,
    )


async def _answered(stack: Any, caller: Any, **extra: Any) -> Any:
    await caller.place_call(to="+15551230001", from_=CALLER, **extra)
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    await session.wait_for_sent("response.done", timeout_s=10)  # the greeting is complete at the model
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
    return session


async def test_slow_tool_runs_in_background_with_thinking_sound_then_result_and_response(tmp_path: Path) -> None:
    async with serve_on_loopback(_tool_app(2.0)) as tool_url, voice_stack(
        tmp_path, tenant_yaml=_tenant_with_tool(tool_url + "/lookup"),
        SWITCHBOARD_THINKING_DELAY_MS=500, SWITCHBOARD_THINKING_INTERVAL_S=0.6,
    ) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        update = session.events_of("session.update")[0]
        names = [tool["name"] for tool in update["session"]["tools"]]
        assert names[:4] == ["get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call"]
        assert "lookup_order" in names

        appends_before = len(session.events_of("input_audio_buffer.append"))
        response = await session.start_response(function_call("lookup_order", {"order_number": "A-1001"}))
        call_done_at = asyncio.get_running_loop().time()
        await response.wait_for_done(timeout_s=5)
        output = await session.wait_for_event(
            "conversation.item.create", timeout_s=6,
            predicate=lambda e: e["item"]["type"] == "function_call_output")
        result_at = asyncio.get_running_loop().time()
        assert 1.9 <= result_at - call_done_at < 4.0
        outcome = json.loads(output["item"]["output"])
        assert outcome["ok"] is True and json.loads(outcome["result"])["status"] == "shipped"
        # response.create only after the function_call_output, and never two at once.
        index = session.received.index(output)
        follow_up = await session.wait_for_event("response.create", after_index=index, timeout_s=3)
        assert follow_up is not None

        # The thinking sound played: its frames reached the caller while the tool ran, starting after the delay.
        pops = set(thinking_sound_payloads())
        pop_times = [m.at_s for m in caller.received if isinstance(m.message, dict)
                     and m.message.get("event") == "media" and m.message["media"]["payload"] in pops]
        assert pop_times and min(pop_times) - call_done_at >= 0.45
        assert len(pop_times) >= 2 * len(pops)  # repeated at the interval
        # Caller audio kept flowing to the model while the tool ran (about 50 frames a second).
        assert len(session.events_of("input_audio_buffer.append")) - appends_before >= 80
        assert session.protocol_errors == []
        await caller.hang_up()


async def test_tool_racing_a_barge_in_still_returns_its_result(tmp_path: Path) -> None:
    async with serve_on_loopback(_tool_app(1.0)) as tool_url, voice_stack(
        tmp_path, tenant_yaml=_tenant_with_tool(tool_url + "/lookup"), SWITCHBOARD_THINKING_DELAY_MS=200,
    ) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        response = await session.start_response(function_call("lookup_order", {"order_number": "A-7"}))
        await response.wait_for_done(timeout_s=5)
        await asyncio.sleep(0.4)  # the thinking sound has started
        await session.speech_started()
        await caller.wait_for_message("clear", timeout_s=2)
        await session.speech_stopped()  # the fake answers the caller's turn with a response of its own
        output = await session.wait_for_event(
            "conversation.item.create", timeout_s=5, predicate=lambda e: e["item"]["type"] == "function_call_output")
        assert json.loads(json.loads(output["item"]["output"])["result"])["order_number"] == "A-7"
        await session.wait_for_event("response.create", after_index=session.received.index(output), timeout_s=5)
        # The protocol was respected throughout: never a response.create while one was active.
        assert not [e for e in session.sent if e["type"] == "error"
                    and e["error"].get("code") not in {"response_cancel_not_active",
                                                       "conversation_already_has_active_response"}]
        await caller.hang_up()


async def test_knowledge_lookup_returns_the_tenants_passage(tmp_path: Path) -> None:
    async with serve_on_loopback(_tool_app(0.0)) as tool_url, voice_stack(
        tmp_path, tenant_yaml=_tenant_with_tool(tool_url + "/lookup"),
    ) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.start_response(function_call("get_knowledge", {"query": "are you open on holidays"}))
        output = await session.wait_for_event(
            "conversation.item.create", timeout_s=5, predicate=lambda e: e["item"]["type"] == "function_call_output")
        assert "public holidays" in output["item"]["output"]
        await caller.hang_up()


async def _transfer(tmp_path: Path, **place: Any) -> tuple[Any, Any]:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        session = await _answered(stack, caller, **place)
        await session.start_response(function_call("transfer_to_human", {"reason": "wants a person"}))
        # A short transition line is requested and played before the transfer.
        line = await session.wait_for_event(
            "response.create", after_index=1, timeout_s=5,
            predicate=lambda e: "transferring" in e.get("response", {}).get("instructions", ""))
        assert line is not None
        request = await stack.twilio_rest.wait_for_request(timeout_s=10)
        heard_before_transfer = len(caller.heard_mulaw)
        await caller.wait_for_stream_closed(timeout_s=5)
        conversation = await stack.conversation(caller.call_sid)
        for _ in range(50):
            if conversation["status"] == "ended":
                break
            await asyncio.sleep(0.05)
            conversation = await stack.conversation(caller.call_sid)
        assert conversation["end_reason"] == "transferred"
        assert heard_before_transfer > 0
        return request, caller


async def test_pstn_transfer_dials_the_tenant_number_with_the_callers_number_as_caller_id(tmp_path: Path) -> None:
    request, caller = await _transfer(tmp_path)
    assert request.method == "POST" and request.is_authenticated
    assert request.path.endswith(f"/Calls/{caller.call_sid}.json")
    dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
    assert dial is not None and dial.get("callerId") == "+15557654321"
    assert dial.findtext("Number") == "+15559990000"


async def test_sip_transfer_uses_the_tenants_caller_id(tmp_path: Path) -> None:
    request, _ = await _transfer(tmp_path, extra_params={"SipDomain": "acme.sip.twilio.com"})
    dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
    assert dial is not None and dial.get("callerId") == "+15551230001"
    assert dial.findtext("Number") == "+15559990000"


async def test_callback_ticket_is_created_in_the_app_server(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        await session.start_response(function_call(
            "create_callback_ticket", {"reason": "Wants a refund", "requested_time": "tomorrow 10am"}))
        output = await session.wait_for_event(
            "conversation.item.create", timeout_s=5, predicate=lambda e: e["item"]["type"] == "function_call_output")
        assert json.loads(output["item"]["output"])["ok"] is True
        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["kind"] == "callback" and ticket["phone_number"] == CALLER
        assert ticket["reason"] == "Wants a refund" and ticket["requested_time"] == "tomorrow 10am"
        await caller.hang_up()


async def test_end_call_lets_the_goodbye_play_then_closes_the_stream_and_completes_the_call(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        stack.model.on("response.create", stream_audio(ms=600, transcript="Goodbye and thanks for calling!"))
        await session.start_response(function_call("end_call", {"reason": "caller is done"}))
        goodbye = await session.wait_for_event(
            "response.create", after_index=1, timeout_s=5,
            predicate=lambda e: "goodbye" in e.get("response", {}).get("instructions", "").lower())
        assert goodbye is not None
        await caller.wait_for_stream_closed(timeout_s=10)
        # The goodbye was heard to its end: every mark sent was echoed after playing, none pending.
        marks_sent = [m for m in _dicts(caller) if m.get("event") == "mark"]
        assert len(caller.marks_echoed) == len(marks_sent) and not caller.has_unplayed_audio
        request = await stack.twilio_rest.wait_for_request(timeout_s=5)
        assert request.form.get("Status") == "completed"
        await asyncio.sleep(0.2)
        assert len(stack.twilio_rest.requests) == 1


async def test_app_server_outage_mid_call_loses_no_message(tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as caller:
        session = await _answered(stack, caller)
        stack.app_network.is_down = True
        await session.start_response(function_call(
            "create_callback_ticket", {"reason": "call me", "phone_number": "+15550001111"}))
        output = await session.wait_for_event(
            "conversation.item.create", timeout_s=5, predicate=lambda e: e["item"]["type"] == "function_call_output")
        assert json.loads(output["item"]["output"])["ok"] is False  # the ticket could not be created: said so
        await session.wait_for_event("response.create", after_index=session.received.index(output), timeout_s=5)
        # The follow-up (the third response: greeting, tool call, answer) is done and has played at the caller.
        await wait_until(lambda: len(session.responses) >= 3 and session.responses[2].is_done, timeout_s=10)
        await caller.wait_for(lambda: not caller.has_unplayed_audio and len(caller.marks_echoed) > 3, timeout_s=10)
        # Caller audio never waited for the outbox.
        frame = base64.b64encode(bytes([0x33]) * 160).decode()
        caller.say_mulaw(base64.b64decode(frame) * 5)
        await caller.wait_for(lambda: sum(1 for e in session.events_of("input_audio_buffer.append")
                                          if e["audio"] == frame) == 5, timeout_s=5)
        await caller.hang_up()
        await session.wait_for_closed(timeout_s=5)
        assert stack.outbox.pending > 0
        stack.app_network.is_down = False
        assert await stack.outbox.wait_until_idle(timeout_s=10)
        conversation = await stack.conversation(caller.call_sid)
        assert conversation["status"] == "ended" and conversation["end_reason"] == "caller_hung_up"
        assert conversation["caller"] == "+1******4321"
        roles = [(m["role"], m.get("name")) for m in conversation["messages"]]
        assert roles[0] == ("assistant", None)  # the greeting
        assert ("tool", "create_callback_ticket") in roles
        assert roles[-1][0] == "assistant"  # the follow-up after the tool
        assert conversation["messages"][0]["text"] == "This is the fake model speaking."

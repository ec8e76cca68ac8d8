"""A real call through the voice server (fake Twilio caller, fake Realtime model) reaching the integrations:
the agent's callback ticket and the call's end arrive signed at the tenant's webhook, and the ticket is
created in Freshdesk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from switchboard.fakes.helpdesks import FakeFreshdesk
from switchboard.fakes.realtime_server import function_call
from tests.bridge.harness import TENANT_YAML, voice_stack
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

CALLER = "+15557654321"


def tenant_with_integrations(webhook_url: str, freshdesk_url: str) -> str:
    acme, rest = TENANT_YAML.split("  - key: broke-co")
    return acme + (
        "    integrations:\n"
        "      webhooks:\n"
        f"        - {{url: '{webhook_url}', secret: '${{ACME_WEBHOOK_SECRET}}', events: [call.ended, ticket.created],"
        " allow_private_network: true}\n"
        f"      freshdesk: {{domain: acme, api_key: '${{ACME_FRESHDESK_KEY}}', base_url: '{freshdesk_url}',"
        " allow_private_network: true}\n"
    ) + "  - key: broke-co" + rest


async def test_a_call_with_a_callback_ticket_reaches_the_webhook_and_freshdesk(tmp_path: Path) -> None:
    environ = {"ACME_WEBHOOK_SECRET": SECRET, "ACME_FRESHDESK_KEY": "fd-test-key"}
    async with WebhookReceiver() as receiver, FakeFreshdesk() as freshdesk:
        yaml_text = tenant_with_integrations(receiver.url, freshdesk.base_url)
        async with voice_stack(tmp_path, tenant_yaml=yaml_text, app_environ=environ) as stack, \
                stack.caller() as caller:
            await caller.place_call(to="+15551230001", from_=CALLER)
            session = await stack.model.wait_for_session(timeout_s=5)
            await caller.connect_stream()
            await session.wait_for_sent("response.done", timeout_s=10)
            await session.start_response(function_call(
                "create_callback_ticket", {"reason": "Wants a refund", "requested_time": "tomorrow 10am"}))
            output = await session.wait_for_event(
                "conversation.item.create", timeout_s=5,
                predicate=lambda e: e["item"]["type"] == "function_call_output")
            assert json.loads(output["item"]["output"])["ok"] is True
            await caller.hang_up()
            received = await receiver.wait_for(2, timeout_s=15)
            async with asyncio.timeout(10):
                while not (tickets := await stack.tickets(caller.call_sid))[0]["external"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            conversation = await stack.conversation(caller.call_sid)

    by_type = {r.payload["type"]: r for r in received}
    assert all(r.is_verified for r in received)
    assert by_type["ticket.created"].payload["data"]["ticket"]["reason"] == "Wants a refund"
    ended = by_type["call.ended"].payload["data"]
    assert ended["conversation"] == conversation
    assert "trace_id" in ended["conversation"] and ended["conversation"]["end_reason"] == "caller_hung_up"
    assert [m["role"] for m in ended["conversation"]["messages"]][:2] == ["assistant", "tool"]
    assert [t["id"] for t in ended["tickets"]] == [tickets[0]["id"]]
    [ticket] = tickets
    assert ticket["external"] == [{"system": "freshdesk", "id": "1", "url": f"{freshdesk.base_url}/a/tickets/1"}]
    [created] = freshdesk.creates()
    assert created.json()["phone"] == CALLER and "Wants a refund" in created.json()["description"]

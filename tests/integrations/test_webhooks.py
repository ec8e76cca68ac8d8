"""Signed webhooks from the App server (contract §9), verified by the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from structlog.testing import capture_logs

from tests.integrations.harness import CALLER, integration_stack, tenant_yaml, webhook_entry
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

ENVIRON = {"ACME_WEBHOOK_SECRET": SECRET}


async def test_a_call_that_ends_posts_one_signed_call_ended_with_the_conversation_as_the_api_shows_it(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver() as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[call.ended]"))
        with capture_logs() as logs:
            async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON) as stack:
                await stack.open_call("CA100")
                await stack.create_ticket("CA100")
                await stack.end_call("CA100")
                [received] = await receiver.wait_for(1)
                await stack.end_call("CA100")  # a repeated end is not a second event
                await stack.wait_for_endpoints(lambda e: e and e[0]["sent"] == 1 and e[0]["pending"] == 0)
                conversations = (await stack.client.get("/api/conversations", params={"call_sid": "CA100"})).json()
                tickets = (await stack.client.get("/api/tickets", params={"call_sid": "CA100"})).json()
                await asyncio.sleep(0.2)
                metrics = (await stack.client.get("/metrics")).text

    assert received.is_verified, received.error
    assert received.message_id.startswith("msg_") and "." not in received.message_id
    assert received.signature.startswith("v1,")
    assert received.payload["type"] == "call.ended"
    datetime.fromisoformat(received.payload["timestamp"])
    data = received.payload["data"]
    # Exactly what the read API returned before the repeated end overwrote the totals (same values here).
    assert data["conversation"] == conversations["conversations"][0]
    assert data["conversation"]["trace_id"] == "trace-CA100"
    assert data["conversation"]["status"] == "ended"
    assert [m["text"] for m in data["conversation"]["messages"]] == [
        "Thanks for calling Acme.", "Please call me back about my refund."
    ]
    assert data["tickets"] == tickets["tickets"]
    assert len(receiver.received) == 1
    assert all(SECRET not in repr(record) and CALLER not in repr(record) for record in logs)
    assert 'switchboard_app_deliveries_total{kind="webhook",outcome="delivered"} 1.0' in metrics
    assert 'switchboard_app_delivery_attempts_total{kind="webhook",result="success"} 1.0' in metrics
    assert 'switchboard_app_delivery_age_seconds_count{kind="webhook"} 1.0' in metrics
    assert 'switchboard_app_integration_events_total{event_type="call.ended"} 1.0' in metrics


async def test_a_callback_ticket_posts_ticket_created(database_url: str, tmp_path: Path) -> None:
    async with WebhookReceiver() as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[ticket.created]"))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON) as stack:
            await stack.open_call("CA101")
            ticket = await stack.create_ticket("CA101")
            [received] = await receiver.wait_for(1)
            await stack.end_call("CA101")  # not subscribed to call.ended
            await asyncio.sleep(0.3)

    assert received.is_verified, received.error
    assert received.payload["type"] == "ticket.created"
    assert received.payload["data"]["ticket"] == ticket
    assert len(receiver.received) == 1


async def test_an_endpoint_failing_twice_gets_the_same_webhook_id_three_times_and_a_first_retry_within_10_s(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver(answers=[500, 503]) as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[call.ended]"))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON) as stack:
            receiver.wall = stack.clock.wall
            await stack.open_call("CA102")
            await stack.end_call("CA102")
            await receiver.wait_for(1)
            [endpoint] = await stack.wait_for_endpoints(lambda e: e and e[0]["last_error"] is not None)
            assert endpoint["pending"] == 1 and endpoint["last_error"].startswith("500")
            await stack.advance(10.0)
            await receiver.wait_for(2)
            await stack.advance(40.0)  # the second retry: 30 s ± 20 %
            received = await receiver.wait_for(3)
            [endpoint] = await stack.wait_for_endpoints(lambda e: e[0]["sent"] == 1)

    assert [r.status_code for r in received] == [500, 503, 200]
    assert all(r.is_verified for r in received)
    assert len({r.message_id for r in received}) == 1
    assert len({r.body for r in received}) == 1
    # Each attempt is signed at its own time.
    assert len({r.timestamp for r in received}) == 3
    assert (received[1].at - received[0].at).total_seconds() <= 10.0
    assert (received[2].at - received[1].at).total_seconds() >= 24.0
    assert endpoint | {"last_error_at": None, "last_success_at": None} == endpoint | {
        "sent": 1, "failed": 0, "pending": 0, "disabled": False, "last_error_at": None, "last_success_at": None,
    }


async def test_410_disables_the_endpoint(database_url: str, tmp_path: Path) -> None:
    async with WebhookReceiver(answers=[410]) as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[call.ended]"))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON) as stack:
            await stack.open_call("CA103")
            await stack.end_call("CA103")
            [endpoint] = await stack.wait_for_endpoints(lambda e: e and e[0]["disabled"])
            await stack.open_call("CA104")
            await stack.end_call("CA104")
            await stack.advance(60.0)  # well past any retry (the receiver allows 5 minutes of clock skew)
            await asyncio.sleep(0.3)
            [after] = await stack.endpoints()

            enabled = await stack.client.post("/api/integrations/endpoints/enable",
                                              params={"tenant": "acme-support", "endpoint": endpoint["endpoint"]})
            await stack.open_call("CA105")
            await stack.end_call("CA105")
            received = await receiver.wait_for(2)

    assert endpoint["failed"] == 1 and endpoint["last_error"].startswith("410")
    assert after["sent"] == 0 and after["pending"] == 0
    assert enabled.status_code == 200
    assert [r.payload["data"]["conversation"]["call_sid"] for r in received] == ["CA103", "CA105"]


async def test_other_4xx_are_retried_a_few_times_then_given_up_and_3xx_is_not_followed(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver(answers=[302, 400, 422, 200], answer_headers={"Location": "/elsewhere"}) as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[call.ended]"))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON) as stack:
            await stack.open_call("CA106")
            await stack.end_call("CA106")
            await receiver.wait_for(1)
            [first] = await stack.wait_for_endpoints(lambda e: e and e[0]["last_error"] is not None)
            await stack.advance(10.0)
            await receiver.wait_for(2)
            await stack.advance(40.0)
            await receiver.wait_for(3)
            [endpoint] = await stack.wait_for_endpoints(lambda e: e[0]["failed"] == 1)
            await stack.advance(200.0)
            await asyncio.sleep(0.3)

    assert first["last_error"] == "302 redirect not followed"
    assert [r.status_code for r in receiver.received] == [302, 400, 422]
    assert endpoint["pending"] == 0 and endpoint["sent"] == 0
    assert endpoint["last_error"].startswith("422")


async def test_a_webhook_to_a_private_address_is_refused_unless_allowed(database_url: str, tmp_path: Path) -> None:
    async with WebhookReceiver() as receiver:
        entry = webhook_entry(receiver.url, events="[call.ended]").replace("allow_private_network: true", "")
        async with integration_stack(database_url, tmp_path, tenant_yaml(entry), environ=ENVIRON) as stack:
            await stack.open_call("CA107")
            await stack.end_call("CA107")
            [endpoint] = await stack.wait_for_endpoints(lambda e: e and e[0]["last_error"] is not None)

    assert "non-public address (127.0.0.1)" in endpoint["last_error"]
    assert "allow_private_network" in endpoint["last_error"]
    assert receiver.received == []


async def test_an_endpoint_that_hangs_holds_up_neither_the_record_nor_other_calls(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver(hold_s=5.0) as receiver:
        yaml_text = tenant_yaml(webhook_entry(receiver.url, events="[call.ended]"))
        async with integration_stack(database_url, tmp_path, yaml_text, environ=ENVIRON,
                                     SWITCHBOARD_DELIVERY_TIMEOUT_S=1.0) as stack:
            await stack.open_call("CA108")
            await stack.end_call("CA108")
            [busy] = await stack.wait_for_endpoints(lambda e: e and e[0]["in_flight"] == 1)
            async with asyncio.timeout(1.0):  # while that delivery waits on the endpoint
                await stack.open_call("CA109")
                await stack.end_call("CA109")
                conversations = (await stack.client.get("/api/conversations")).json()["conversations"]
            [timed_out] = await stack.wait_for_endpoints(lambda e: e[0]["last_error"] is not None)

    assert busy["sent"] == 0
    assert [(c["call_sid"], c["status"]) for c in conversations] == [("CA109", "ended"), ("CA108", "ended")]
    assert timed_out["last_error"] == "no answer within 1 s" and timed_out["pending"] == 2

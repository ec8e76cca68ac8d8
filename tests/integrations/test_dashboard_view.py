"""Deliveries per endpoint in the dashboard (/ui/integrations) and the API, each tenant seeing its own."""

from __future__ import annotations

from pathlib import Path

from switchboard.fakes.helpdesks import FakeFreshdesk, FakeZendesk
from switchboard.tickets.database import create_engine
from tests.integrations.harness import integration_stack, tenant_yaml, webhook_entry
from tests.integrations.test_helpdesks import ENVIRON, helpdesks_entry, wait_for_ticket
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver
from tests.tickets.dashboard_data import add_user, create_key, sign_in


async def test_each_tenant_sees_its_own_endpoints_figures_in_the_dashboard_and_the_api(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver(answers=[503]) as acme_hook, WebhookReceiver() as globex_hook:
        yaml_text = tenant_yaml(webhook_entry(acme_hook.url, events="[call.ended]")) + tenant_yaml(
            webhook_entry(globex_hook.url, events="[call.ended]"), key="globex", number="+15551230002"
        ).removeprefix("tenants:\n")
        async with integration_stack(database_url, tmp_path, yaml_text, environ={"ACME_WEBHOOK_SECRET": SECRET}) as stack:
            await stack.open_call("CA600")
            await stack.end_call("CA600")
            await stack.open_call("CA601", tenant="globex")
            await stack.end_call("CA601")
            await stack.wait_for_endpoints(lambda e: len(e) == 2 and all(x["in_flight"] == 0 for x in e)
                                           and sum(x["sent"] for x in e) == 1)
            engine = create_engine(database_url)
            try:
                await add_user(engine, "dev@acme.test", "acme-support", "developer")
                globex_key = await create_key(engine, "globex", "viewer")
            finally:
                await engine.dispose()
            async with stack.browser() as browser:
                assert (await sign_in(browser, "dev@acme.test")).status_code == 303
                page = await browser.get("/ui/integrations")
            async with stack.with_bearer(globex_key) as globex_api:
                globex_view = (await globex_api.get("/api/integrations/endpoints")).json()["endpoints"]
                asked_for_acme = (await globex_api.get("/api/integrations/endpoints",
                                                       params={"tenant": "acme-support"})).json()["endpoints"]

    assert page.status_code == 200
    html = page.text
    assert acme_hook.url in html and globex_hook.url not in html
    assert "503" in html  # the last error, as the endpoint answered
    assert [(e["tenant"], e["label"], e["sent"]) for e in globex_view] == [("globex", globex_hook.url, 1)]
    assert asked_for_acme == []


async def test_call_and_tickets_pages_show_helpdesk_links_and_refusals_to_their_tenant_only(
    database_url: str, tmp_path: Path
) -> None:
    environ = {**ENVIRON, "ACME_FRESHDESK_KEY": "wrong-key"}  # Freshdesk refuses (401); Zendesk takes it
    async with FakeFreshdesk() as freshdesk, FakeZendesk() as zendesk:
        stack_context = integration_stack(database_url, tmp_path, tenant_yaml(helpdesks_entry(freshdesk, zendesk)),
                                          environ=environ)
        async with stack_context as stack:
            await stack.open_call("CA700")
            await stack.create_ticket("CA700")
            await wait_for_ticket(stack, "CA700", lambda t: len(t["external"]) == 1 and len(t["integration_errors"]) == 1)
            engine = create_engine(database_url)
            try:
                await add_user(engine, "dev@acme.test", "acme-support", "developer")
                await add_user(engine, "dev@globex.test", "globex", "developer")
            finally:
                await engine.dispose()
            async with stack.browser() as acme:
                assert (await sign_in(acme, "dev@acme.test")).status_code == 303
                call_page = await acme.get("/ui/calls/CA700")
                tickets_page = await acme.get("/ui/tickets")
            async with stack.browser() as globex:
                assert (await sign_in(globex, "dev@globex.test")).status_code == 303
                globex_call = await globex.get("/ui/calls/CA700")
                globex_tickets = await globex.get("/ui/tickets")

    zendesk_link = f'href="{zendesk.base_url}/agent/tickets/1"'
    refusal = "freshdesk: 401 You have to be logged in to perform this action."
    for page in (call_page, tickets_page):
        assert page.status_code == 200
        assert zendesk_link in page.text and "Zendesk #1" in page.text
        assert "Freshdesk\n    retrying: " + refusal in page.text
    assert globex_call.status_code == 404
    assert globex_tickets.status_code == 200
    for text in (zendesk_link, refusal, "Zendesk #1"):
        assert text not in globex_tickets.text and text not in globex_call.text
    assert "CA700" not in globex_tickets.text

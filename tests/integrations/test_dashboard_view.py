"""Deliveries per endpoint in the dashboard (/ui/integrations) and the API, each tenant seeing its own."""

from __future__ import annotations

from pathlib import Path

from switchboard.tickets.database import create_engine
from tests.integrations.harness import integration_stack, tenant_yaml, webhook_entry
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

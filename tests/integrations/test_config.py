"""Tenants' `integrations:` (contract §4): validated at load, stored unexpanded, served to the App server,
picked up by a running App server without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from switchboard.config import AISettings, load_settings
from switchboard.knowledge.app import create_app as create_ai_app
from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.tenant_file import parse_tenant_file
from tests.integrations.harness import (
    SERVICE_TOKEN,
    integration_stack,
    load_tenant_file,
    tenant_yaml,
    webhook_entry,
)
from tests.integrations.webhook_receiver import SECRET, WebhookReceiver

CONTRACT_EXAMPLE = """\
webhooks:                        # Standard Webhooks (signed), at least once, retried
  - url: https://hooks.example.com/switchboard
    secret: ${ACME_WEBHOOK_SECRET}               # whsec_…
    events: [call.ended, ticket.created]
freshdesk: {domain: acme, api_key: ${ACME_FRESHDESK_KEY}}                      # base_url: optional override
zendesk: {subdomain: acme, email: ops@acme.example, api_token: ${ACME_ZENDESK_TOKEN}}   # base_url: likewise
"""


def test_the_contracts_example_loads_with_its_variables_unexpanded() -> None:
    [spec] = parse_tenant_file(tenant_yaml(CONTRACT_EXAMPLE))

    assert spec.integrations is not None
    assert spec.integrations.model_dump(mode="json") == {
        "webhooks": [{"url": "https://hooks.example.com/switchboard", "secret": "${ACME_WEBHOOK_SECRET}",
                      "events": ["call.ended", "ticket.created"], "allow_private_network": False}],
        "freshdesk": {"domain": "acme", "api_key": "${ACME_FRESHDESK_KEY}", "base_url": None,
                      "allow_private_network": False},
        "zendesk": {"subdomain": "acme", "email": "ops@acme.example", "api_token": "${ACME_ZENDESK_TOKEN}",
                    "base_url": None, "allow_private_network": False},
    }


@pytest.mark.parametrize(("integrations", "message"), [
    ("slack: {url: https://x.example}", "tenant 'acme-support': unknown key 'integrations.slack'"),
    ("webhooks:\n  - {url: https://x.example, secret: '${S}', events: [call.started]}",
     "tenant 'acme-support': integrations.webhooks.0.events.0: Input should be 'call.ended' or 'ticket.created'"),
    ("webhooks:\n  - {url: https://x.example, secret: '${S}', events: []}",
     "tenant 'acme-support': integrations.webhooks.0.events: List should have at least 1 item"),
    ("webhooks:\n  - {url: ftp://x.example, secret: '${S}', events: [call.ended]}",
     "tenant 'acme-support': integrations.webhooks.0.url: 'ftp://x.example' is not an http(s) URL"),
    ("webhooks:\n  - {url: https://x.example, secret: hunter2, events: [call.ended]}",
     "tenant 'acme-support': integrations.webhooks.0.secret: must be whsec_<base64> or a ${VAR} holding one"),
    ("webhooks:\n  - {url: https://x.example, events: [call.ended]}",
     "tenant 'acme-support': missing key 'integrations.webhooks.0.secret'"),
    ("freshdesk: {domain: acme, api_key: '${K}', allow_private: true}",
     "tenant 'acme-support': unknown key 'integrations.freshdesk.allow_private'"),
    ("zendesk: {subdomain: acme, email: nobody, api_token: '${T}'}",
     "tenant 'acme-support': integrations.zendesk.email: String should match pattern"),
    ("zendesk: {subdomain: acme, email: ops@acme.example, api_token: '${T}', base_url: 'acme.zendesk.com'}",
     "tenant 'acme-support': integrations.zendesk.base_url: 'acme.zendesk.com' is not an http(s) URL"),
])
def test_a_bad_integrations_entry_is_refused_naming_the_tenant_and_the_key(integrations: str, message: str) -> None:
    with pytest.raises(TenantFileError) as refused:
        parse_tenant_file(tenant_yaml(integrations))

    assert str(refused.value).startswith(message)


async def test_the_ai_server_serves_integrations_unexpanded_with_a_version(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_file(database_url, tenant_yaml(CONTRACT_EXAMPLE), tmp_path)
    app = create_ai_app(load_settings(AISettings, AI_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ai.test"
    ) as client:
        anonymous = await client.get("/voiceagent/integrations/")
        auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
        first = await client.get("/voiceagent/integrations/", headers=auth)
        again = await client.get("/voiceagent/integrations/", headers={**auth, "If-None-Match": first.headers["etag"]})

    assert anonymous.status_code == 401
    assert first.status_code == 200
    acme = first.json()["tenants"]["acme-support"]
    assert acme["webhooks"][0]["secret"] == "${ACME_WEBHOOK_SECRET}"
    assert acme["freshdesk"]["api_key"] == "${ACME_FRESHDESK_KEY}"
    assert again.status_code == 304 and again.content == b""


async def test_a_running_app_server_picks_up_a_changed_tenant_file_without_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver() as old, WebhookReceiver() as new:
        environ = {"ACME_WEBHOOK_SECRET": SECRET}
        async with integration_stack(database_url, tmp_path, tenant_yaml(webhook_entry(old.url)), environ=environ) as stack:
            await stack.open_call("CA300")
            await stack.end_call("CA300")
            await old.wait_for(1)
            await stack.reload(tenant_yaml(webhook_entry(new.url)))
            await asyncio.sleep(0.5)  # the App server polls the AI server every 0.1 s in this test
            await stack.open_call("CA301")
            await stack.end_call("CA301")
            [received] = await new.wait_for(1)

    assert received.is_verified and received.payload["data"]["conversation"]["call_sid"] == "CA301"
    assert [r.payload["data"]["conversation"]["call_sid"] for r in old.received] == ["CA300"]


async def test_a_missing_variable_is_recorded_by_name_and_no_secret_reaches_a_log(
    database_url: str, tmp_path: Path
) -> None:
    async with WebhookReceiver() as receiver:
        with capture_logs() as logs:
            async with integration_stack(database_url, tmp_path, tenant_yaml(webhook_entry(receiver.url)),
                                         environ={"OTHER": "x"}) as stack:
                await stack.open_call("CA302")
                await stack.end_call("CA302")
                [endpoint] = await stack.wait_for_endpoints(lambda e: e and e[0]["last_error"] is not None)

    assert endpoint["last_error"] == "the App server has no environment variable ACME_WEBHOOK_SECRET"
    assert endpoint["pending"] == 1
    assert receiver.received == []
    assert all(SECRET not in repr(record) for record in logs)

"""Tenant tools: argument validation, ${VAR} expansion, the private-address guard, timeouts, trimming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard.knowledge.tool_http import MAX_RESULT_BYTES, is_public_address

from .conftest import load_file, running_app
from .http_endpoint import ToolEndpoint, serving


def tenant_yaml(endpoint_url: str, *, allow_private_network: bool = True, timeout_s: float = 5.0) -> str:
    allow = "true" if allow_private_network else "false"
    return f"""\
tenants:
  - key: acme-support
    company: Acme Outdoor
    greeting: Hi
    credits: 5
    tools:
      - name: lookup_order
        description: Look up an order by its number.
        parameters:
          type: object
          properties: {{order_number: {{type: string, pattern: "^A[0-9]+$"}}, include_items: {{type: boolean}}}}
          required: [order_number]
          additionalProperties: false
        http:
          method: POST
          url: "{endpoint_url}/orders/lookup"
          headers: {{Authorization: "Bearer ${{ECHO_TOKEN}}", X-Static: fixed}}
          timeout_s: {timeout_s}
          allow_private_network: {allow}
      - name: store_stock
        description: Check stock of a product in a store.
        parameters: {{type: object, properties: {{sku: {{type: string}}, store: {{type: string}}, qty: {{type: integer}}}}, required: [sku]}}
        http: {{method: GET, url: "{endpoint_url}/stock", allow_private_network: {allow}}}
"""


@pytest.fixture
async def endpoint() -> AsyncIterator[ToolEndpoint]:
    async with serving(ToolEndpoint()) as running:
        yield running


async def loaded_app(database_url: str, tmp_path: Path, text: str) -> None:
    (tmp_path / "tenants.yaml").write_text(text)
    await load_file(database_url, tmp_path / "tenants.yaml")


async def execute(client: httpx.AsyncClient, name: str, arguments: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/voiceagent/execute_tool/",
        json={"bot_profile_key": "acme-support", "name": name, "arguments": arguments, "call_sid": "CA1"},
    )


async def test_post_tool_sends_json_with_expanded_headers(
    database_url: str, tmp_path: Path, endpoint: ToolEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    monkeypatch.setenv("ECHO_TOKEN", "token-from-the-environment")
    async with running_app(database_url, environ=None) as client:
        response = await execute(client, "lookup_order", {"order_number": "A1234", "include_items": True})

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("ok", "status_code", "result", "error")} == {
        "ok": True, "status_code": 200, "result": '{"status": "shipped", "eta": "Friday"}', "error": None,
    }
    [received] = endpoint.received
    assert (received.method, received.path) == ("POST", "/orders/lookup")
    assert received.json() == {"order_number": "A1234", "include_items": True}
    assert received.headers["authorization"] == "Bearer token-from-the-environment"
    assert received.headers["x-static"] == "fixed"
    assert received.headers["host"] == f"127.0.0.1:{endpoint.port}"


async def test_get_tool_sends_query_parameters(database_url: str, tmp_path: Path, endpoint: ToolEndpoint) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    async with running_app(database_url, environ={}) as client:
        response = await execute(client, "store_stock", {"sku": "TENT-2P", "store": "Denver", "qty": 2})
    assert response.json()["ok"] is True
    [received] = endpoint.received
    assert (received.method, received.path, received.body) == ("GET", "/stock", b"")
    assert received.query == {"sku": "TENT-2P", "store": "Denver", "qty": "2"}


@pytest.mark.parametrize(
    ("arguments", "detail"),
    [
        ({}, "lookup_order: arguments: 'order_number' is a required property"),
        ({"order_number": 1234}, "lookup_order: order_number: 1234 is not of type 'string'"),
        ({"order_number": "B1"}, "lookup_order: order_number: 'B1' does not match '^A[0-9]+$'"),
        ({"order_number": "A1", "colour": "red"},
         "lookup_order: arguments: Additional properties are not allowed ('colour' was unexpected)"),
    ],
)
async def test_arguments_are_validated_before_any_call(
    database_url: str, tmp_path: Path, endpoint: ToolEndpoint, arguments: dict[str, Any], detail: str
) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    async with running_app(database_url, environ={"ECHO_TOKEN": "t"}) as client:
        response = await execute(client, "lookup_order", arguments)
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_arguments", "detail": detail}
    assert endpoint.received == []


async def test_loopback_is_refused_without_allow_private_network(
    database_url: str, tmp_path: Path, endpoint: ToolEndpoint
) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url, allow_private_network=False))
    async with running_app(database_url, environ={"ECHO_TOKEN": "t"}) as client:
        response = await execute(client, "lookup_order", {"order_number": "A1"})
        localhost = await execute(client, "store_stock", {"sku": "X"})
    body = response.json()
    assert response.status_code == 200
    assert body["ok"] is False and body["status_code"] is None and body["result"] == ""
    assert body["error"] == (
        "refused: 127.0.0.1 resolves to a non-public address (127.0.0.1); "
        "set http.allow_private_network: true to allow it"
    )
    assert localhost.json()["ok"] is False
    assert endpoint.received == []


async def test_unknown_and_voice_server_tools_are_not_found(database_url: str, tmp_path: Path, endpoint: ToolEndpoint) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    async with running_app(database_url, environ={}) as client:
        unknown = await execute(client, "launch_rocket", {})
        transfer = await execute(client, "transfer_to_human", {"reason": "asked for a person", "summary": "Wants a person."})
        wrong_tenant = await client.post(
            "/voiceagent/execute_tool/", json={"bot_profile_key": "nobody", "name": "lookup_order", "arguments": {}}
        )
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "tool_not_found", "detail": "tenant 'acme-support' has no tool 'launch_rocket'"}
    assert transfer.status_code == 404
    assert transfer.json()["error"] == "tool_not_found"
    assert wrong_tenant.status_code == 404
    assert wrong_tenant.json()["error"] == "tenant_not_found"


async def test_a_missing_environment_variable_fails_the_call_without_sending(
    database_url: str, tmp_path: Path, endpoint: ToolEndpoint
) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    async with running_app(database_url, environ={}) as client:
        response = await execute(client, "lookup_order", {"order_number": "A1"})
    assert response.json()["ok"] is False
    assert response.json()["error"] == "the AI server has no environment variable ECHO_TOKEN"
    assert endpoint.received == []


async def test_a_slow_tool_times_out(database_url: str, tmp_path: Path, endpoint: ToolEndpoint) -> None:
    endpoint.delay_s = 2.0
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url, timeout_s=0.2))
    async with running_app(database_url, environ={"ECHO_TOKEN": "t"}) as client:
        response = await execute(client, "lookup_order", {"order_number": "A1"})
    body = response.json()
    assert (body["ok"], body["error"]) == (False, "no answer within 0.2 s")
    assert body["duration_ms"] < 1500
    assert len(endpoint.received) == 1


async def test_error_statuses_and_long_bodies_reach_the_model_trimmed(
    database_url: str, tmp_path: Path, endpoint: ToolEndpoint
) -> None:
    endpoint.status_code = 503
    endpoint.body = ("é" * 5000).encode()
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url))
    async with running_app(database_url, environ={"ECHO_TOKEN": "t"}) as client:
        response = await execute(client, "lookup_order", {"order_number": "A1"})
    body = response.json()
    assert (body["ok"], body["status_code"], body["error"]) == (False, 503, "the tool answered HTTP 503")
    assert body["result"] == "é" * (MAX_RESULT_BYTES // 2) + " …[truncated]"


async def test_tool_calls_are_counted(database_url: str, tmp_path: Path, endpoint: ToolEndpoint) -> None:
    await loaded_app(database_url, tmp_path, tenant_yaml(endpoint.url, allow_private_network=False))
    async with running_app(database_url, environ={"ECHO_TOKEN": "t"}) as client:
        await execute(client, "lookup_order", {"order_number": "A1"})
        metrics = (await client.get("/metrics")).text
    assert 'switchboard_ai_tool_calls_total{outcome="failed"} 1.0' in metrics


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_only_public_addresses_pass_the_guard(address: str, public: bool) -> None:
    assert is_public_address(address) is public

"""The AI server's HTTP API (docs/internal-api.md) through the real app and a real database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from .conftest import ACME, GLOBEX, load_file, running_app, write_tenant_file


async def test_health_and_metrics_need_no_token(loaded_client: httpx.AsyncClient) -> None:
    anonymous = {"Authorization": ""}
    assert (await loaded_client.get("/health-check/live", headers=anonymous)).status_code == 200
    ready = await loaded_client.get("/health-check/ready", headers=anonymous)
    assert ready.status_code == 200
    await loaded_client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230001"})
    metrics = await loaded_client.get("/metrics", headers=anonymous)
    assert metrics.status_code == 200
    assert 'switchboard_ai_http_requests_total{method="POST",route="/voiceagent/resolve_tenant/",status="200"} 1.0' in metrics.text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer "])
async def test_voiceagent_endpoints_refuse_a_missing_or_wrong_token(
    loaded_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {"Authorization": ""}
    for path, body in [
        ("/voiceagent/resolve_tenant/", {"to": "+15551230001"}),
        ("/voiceagent/call_profile/", {"bot_profile_key": "acme-support", "caller_number": "+1555", "is_sip_call": False, "call_sid": "CA1"}),
        ("/voiceagent/get_available_tools/", {"bot_profile_key": "acme-support"}),
        ("/voiceagent/search_knowledge_base/", {"bot_profile_key": "acme-support", "query": "returns"}),
        ("/voiceagent/execute_tool/", {"bot_profile_key": "acme-support", "name": "lookup_order", "arguments": {}, "call_sid": "CA1"}),
        ("/voiceagent/charge_call/", {"bot_profile_key": "acme-support", "call_sid": "CA1", "duration_s": 60}),
    ]:
        response = await loaded_client.post(path, json=body, headers=headers)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("request_body", "expected_key"),
    [
        ({"sip_domain": "acme.sip.twilio.com", "to": "+15551230002", "application_sid": None}, "acme-support"),
        ({"sip_domain": "ACME.sip.twilio.com", "to": None, "application_sid": None}, "acme-support"),
        ({"sip_domain": "unknown.sip.twilio.com", "to": "+15551230002", "application_sid": "AP00000000000000000000000000000001"}, "globex"),
        ({"sip_domain": None, "to": "+15559999999", "application_sid": "AP00000000000000000000000000000001"}, "acme-support"),
        ({"sip_domain": "globex.sip.twilio.com", "to": "+15551230001"}, "globex"),
    ],
)
async def test_routing_tries_sip_domain_then_to_then_application_sid(
    loaded_client: httpx.AsyncClient, request_body: dict[str, str | None], expected_key: str
) -> None:
    response = await loaded_client.post("/voiceagent/resolve_tenant/", json=request_body)
    assert response.status_code == 200
    assert response.json()["bot_profile_key"] == expected_key


async def test_resolve_reports_credits_and_unknown_numbers(loaded_client: httpx.AsyncClient) -> None:
    acme = await loaded_client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230001"})
    assert acme.json() == {"bot_profile_key": "acme-support", "credits": 500, "has_credits": True}
    globex = await loaded_client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230002"})
    assert globex.json() == {"bot_profile_key": "globex", "credits": 0, "has_credits": False}
    unknown = await loaded_client.post("/voiceagent/resolve_tenant/", json={"to": "+15550000000"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "tenant_not_found"


async def test_call_profile_builds_instructions_at_the_clocks_time(database_url: str, tenant_file: Path) -> None:
    await load_file(database_url, tenant_file)
    saturday_3pm_new_york = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    async with running_app(database_url, wall=saturday_3pm_new_york) as client:
        response = await client.post(
            "/voiceagent/call_profile/",
            json={"bot_profile_key": "acme-support", "caller_number": "+15557654321", "is_sip_call": False, "call_sid": "CA42"},
        )
    assert response.status_code == 200
    profile = response.json()
    instructions = profile.pop("instructions")
    assert profile == {
        "bot_profile_key": "acme-support",
        "company": "Acme Outdoor",
        "greeting": "Thanks for calling Acme Outdoor, how can I help?",
        "voice": {"provider": "openai", "name": "marin", "speed": 1.0},
        "transcriber": "none",
        "transfer": {"number": "+15559990000", "caller_id": "+15551230001"},
        "credits": 500,
        "has_credits": True,
        "is_open_now": False,
        "timezone": "America/New_York",
        "turn_detection": None,
        "keypad": {},
    }
    assert "The business is CLOSED right now." in instructions
    assert "caller_number=+15557654321" in instructions
    assert "source=PHONE" in instructions


async def test_call_profile_of_an_elevenlabs_tenant(loaded_client: httpx.AsyncClient) -> None:
    response = await loaded_client.post(
        "/voiceagent/call_profile/",
        json={"bot_profile_key": "globex", "caller_number": "+15557654321", "is_sip_call": True, "call_sid": "CA1"},
    )
    profile = response.json()
    assert profile["voice"] == {
        "provider": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM", "model": "eleven_flash_v2_5", "speed": 1.0,
    }
    assert profile["transfer"] is None
    assert profile["is_open_now"] is True  # no business hours configured
    assert profile["has_credits"] is False
    assert "is_sip_call=true" in profile["instructions"]


async def test_a_running_server_serves_a_newly_loaded_version(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    async with running_app(database_url) as client:
        before = await client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230002"})
        await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX.replace("credits: 0", "credits: 42")))
        after = await client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230002"})
    assert before.json()["credits"] == 0
    assert after.json() == {"bot_profile_key": "globex", "credits": 42, "has_credits": True}


async def test_tools_list_builtins_first_then_the_tenants(loaded_client: httpx.AsyncClient) -> None:
    response = await loaded_client.post("/voiceagent/get_available_tools/", json={"bot_profile_key": "acme-support"})
    tools = response.json()["tools"]
    assert [t["name"] for t in tools] == [
        "get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call", "lookup_order",
    ]
    assert all(t["type"] == "function" for t in tools)
    assert tools[2]["parameters"]["required"] == ["reason"]
    assert set(tools[2]["parameters"]["properties"]) == {"phone_number", "reason", "requested_time"}
    assert tools[4] == {
        "type": "function",
        "name": "lookup_order",
        "description": "Look up an order by its number.",
        "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]},
    }
    globex = await loaded_client.post("/voiceagent/get_available_tools/", json={"bot_profile_key": "globex"})
    assert [t["name"] for t in globex.json()["tools"]] == ["get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call"]


async def test_errors_have_one_shape(loaded_client: httpx.AsyncClient) -> None:
    missing = await loaded_client.post("/voiceagent/get_available_tools/", json={"bot_profile_key": "nobody"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "tenant_not_found", "detail": "no tenant with bot_profile_key 'nobody'"}
    invalid = await loaded_client.post("/voiceagent/call_profile/", json={"caller_number": "+1"})
    assert invalid.status_code == 422
    assert invalid.json() == {"error": "invalid_request", "detail": "bot_profile_key: Field required"}
    unknown = await loaded_client.get("/voiceagent/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"


async def test_resolve_reports_max_concurrent_calls_when_the_tenant_sets_one(database_url: str,
                                                                            tmp_path: Path) -> None:
    limited = GLOBEX.replace("    credits: 0\n", "    credits: 5\n    max_concurrent_calls: 2\n")
    await load_file(database_url, write_tenant_file(tmp_path, ACME, limited))
    async with running_app(database_url) as client:
        globex = await client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230002"})
        acme = await client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230001"})
    assert globex.json() == {"bot_profile_key": "globex", "credits": 5, "has_credits": True,
                             "max_concurrent_calls": 2}
    assert "max_concurrent_calls" not in acme.json()  # no limit


async def test_a_max_concurrent_calls_below_one_is_refused_naming_the_tenant(tmp_path: Path) -> None:
    from switchboard.knowledge.errors import TenantFileError
    from switchboard.knowledge.tenant_file import parse_tenant_file

    bad = GLOBEX.replace("    credits: 0\n", "    credits: 5\n    max_concurrent_calls: 0\n")
    with pytest.raises(TenantFileError) as error:
        parse_tenant_file(write_tenant_file(tmp_path, bad).read_text())
    assert "globex" in str(error.value) and "max_concurrent_calls" in str(error.value)

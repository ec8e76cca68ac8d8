"""KnowledgeClient against the real AI server app (httpx.ASGITransport, SQLite): call charges, and the
short-lived cache of the last good answers used while the AI server is down (a SwitchableTransport
refusing connections). Cache expiry runs on a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from switchboard.bridge.adapters.knowledge_client import CallProfile, KnowledgeClient, ProfileCache
from switchboard.clock import ManualClock
from switchboard.config import AISettings
from switchboard.errors import TenantNotFound, UpstreamTimeout, UpstreamUnavailable
from switchboard.http_clients import build_http_client
from switchboard.knowledge.app import create_app as create_ai_app
from tests.bridge.harness import SERVICE_TOKEN, TENANT_YAML, SwitchableTransport, load_tenant_yaml

FIRST_CALLER = "+15557654321"
SECOND_CALLER = "+15550001111"
BUILTIN_TOOLS = ["get_knowledge", "transfer_to_human", "create_callback_ticket", "end_call"]


@dataclass
class AIServer:
    knowledge: KnowledgeClient
    network: SwitchableTransport
    clock: ManualClock


@pytest.fixture
async def ai_server(tmp_path: Path) -> AsyncIterator[AIServer]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_yaml(database_url, TENANT_YAML, tmp_path)
    app = create_ai_app(AISettings(AI_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    clock = ManualClock()
    network = SwitchableTransport(httpx.ASGITransport(app=app))
    async with app.router.lifespan_context(app), build_http_client(
        base_url="http://ai.internal", bearer_token=SERVICE_TOKEN, transport=network
    ) as http_client:
        yield AIServer(KnowledgeClient(http_client, cache=ProfileCache(clock, ttl_s=300.0)), network, clock)


async def acme_profile(knowledge: KnowledgeClient, caller_number: str, call_sid: str, *, cached: bool) -> CallProfile:
    fetch = knowledge.call_profile_or_cached if cached else knowledge.call_profile
    return await fetch(bot_profile_key="acme-support", caller_number=caller_number, is_sip_call=False, call_sid=call_sid)


async def test_a_call_is_charged_once_however_often_it_is_sent(ai_server: AIServer) -> None:
    knowledge = ai_server.knowledge
    first = await knowledge.charge_call(bot_profile_key="acme-support", call_sid="CA100", duration_s=61.5)
    again = await knowledge.charge_call(bot_profile_key="acme-support", call_sid="CA100", duration_s=61.5)

    assert first == {"bot_profile_key": "acme-support", "call_sid": "CA100", "minutes": 2,
                     "credits_remaining": 498, "already_charged": False}
    assert again == {**first, "already_charged": True}
    route = await knowledge.resolve_tenant(sip_domain=None, to="+15551230001", application_sid=None)
    assert (route.credits, route.has_credits) == (498, True)


async def test_charging_a_tenant_without_credits_leaves_zero(ai_server: AIServer) -> None:
    charge = await ai_server.knowledge.charge_call(bot_profile_key="broke-co", call_sid="CA101", duration_s=30.0)
    assert (charge["minutes"], charge["credits_remaining"]) == (1, 0)


async def test_charging_an_unknown_tenant_says_so(ai_server: AIServer) -> None:
    with pytest.raises(TenantNotFound):
        await ai_server.knowledge.charge_call(bot_profile_key="nobody", call_sid="CA102", duration_s=30.0)


async def test_a_charge_refused_while_the_ai_server_is_down_can_be_retried(ai_server: AIServer) -> None:
    knowledge = ai_server.knowledge
    ai_server.network.is_down = True
    with pytest.raises(UpstreamUnavailable) as refused:
        await knowledge.charge_call(bot_profile_key="acme-support", call_sid="CA103", duration_s=200.0)
    assert refused.value.retryable is True

    ai_server.network.is_down = False
    retried = await knowledge.charge_call(bot_profile_key="acme-support", call_sid="CA103", duration_s=200.0)
    assert (retried["minutes"], retried["credits_remaining"], retried["already_charged"]) == (4, 496, False)


class StalledTransport(httpx.AsyncBaseTransport):
    """An AI server that accepts the request and never answers."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_charge_that_gets_no_answer_times_out() -> None:
    async with build_http_client(base_url="http://ai.internal", transport=StalledTransport()) as http_client:
        knowledge = KnowledgeClient(http_client, cache=ProfileCache(ManualClock()))
        with pytest.raises(UpstreamTimeout) as timed_out:
            await knowledge.charge_call(bot_profile_key="acme-support", call_sid="CA104", duration_s=5.0, timeout_s=0.05)
    assert timed_out.value.retryable is True


async def test_while_the_ai_server_is_down_a_call_gets_the_last_good_profile(ai_server: AIServer) -> None:
    knowledge = ai_server.knowledge
    live = await acme_profile(knowledge, FIRST_CALLER, "CA200", cached=True)
    assert live.from_cache is False
    assert f"caller_number={FIRST_CALLER}" in live.instructions

    ai_server.network.is_down = True
    ai_server.clock.advance(120.0)
    with capture_logs() as logs:
        cached = await acme_profile(knowledge, SECOND_CALLER, "CA201", cached=True)

    assert cached.from_cache is True
    assert (cached.company, cached.greeting, cached.voice, cached.transfer, cached.credits) == (
        live.company, live.greeting, live.voice, live.transfer, live.credits,
    )
    # This call's caller, never the earlier one's.
    assert f"caller_number={SECOND_CALLER}\nis_sip_call=false\ncall_sid=CA201" in cached.instructions
    assert FIRST_CALLER not in cached.instructions
    assert "CA200" not in cached.instructions
    assert cached.instructions.replace(SECOND_CALLER, FIRST_CALLER).replace("CA201", "CA200") == live.instructions
    assert logs == [{"event": "ai_server.answered_from_cache", "what": "call_profile", "tenant": "acme-support",
                     "age_s": 120.0, "error": "UpstreamUnavailable", "log_level": "warning"}]
    with pytest.raises(UpstreamUnavailable):
        await acme_profile(knowledge, SECOND_CALLER, "CA202", cached=False)


async def test_a_sip_call_gets_a_cached_profile_saying_so(ai_server: AIServer) -> None:
    await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA210", cached=False)
    ai_server.network.is_down = True
    cached = await ai_server.knowledge.call_profile_or_cached(
        bot_profile_key="acme-support", caller_number="2001", is_sip_call=True, call_sid="CA211"
    )
    assert "caller_number=2001\nis_sip_call=true\ncall_sid=CA211" in cached.instructions


async def test_a_cached_profile_expires(ai_server: AIServer) -> None:
    await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA300", cached=True)
    ai_server.network.is_down = True

    ai_server.clock.advance(299.9)
    assert (await acme_profile(ai_server.knowledge, SECOND_CALLER, "CA301", cached=True)).from_cache is True
    ai_server.clock.advance(0.1)
    with pytest.raises(UpstreamUnavailable):
        await acme_profile(ai_server.knowledge, SECOND_CALLER, "CA302", cached=True)


async def test_every_good_answer_restarts_the_ttl(ai_server: AIServer) -> None:
    await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA400", cached=True)
    ai_server.clock.advance(250.0)
    await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA401", cached=True)
    ai_server.clock.advance(250.0)
    ai_server.network.is_down = True
    assert (await acme_profile(ai_server.knowledge, SECOND_CALLER, "CA402", cached=True)).from_cache is True


async def test_nothing_cached_means_the_outage_reaches_the_caller(ai_server: AIServer) -> None:
    ai_server.network.is_down = True
    with pytest.raises(UpstreamUnavailable):
        await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA500", cached=True)
    with pytest.raises(UpstreamUnavailable):
        await ai_server.knowledge.available_tools_or_cached("acme-support")
    with pytest.raises(UpstreamUnavailable):
        await ai_server.knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230001", application_sid=None)


async def test_the_cache_is_per_tenant(ai_server: AIServer) -> None:
    await acme_profile(ai_server.knowledge, FIRST_CALLER, "CA600", cached=True)
    ai_server.network.is_down = True
    with pytest.raises(UpstreamUnavailable):
        await ai_server.knowledge.call_profile_or_cached(
            bot_profile_key="broke-co", caller_number=FIRST_CALLER, is_sip_call=False, call_sid="CA601"
        )


async def test_an_unknown_tenant_is_never_answered_from_the_cache(ai_server: AIServer) -> None:
    with pytest.raises(TenantNotFound):
        await ai_server.knowledge.call_profile_or_cached(
            bot_profile_key="nobody", caller_number=FIRST_CALLER, is_sip_call=False, call_sid="CA700"
        )
    with pytest.raises(TenantNotFound):
        await ai_server.knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15550000000", application_sid=None)


async def test_while_the_ai_server_is_down_the_last_good_tool_list_is_used(ai_server: AIServer) -> None:
    live = await ai_server.knowledge.available_tools_or_cached("acme-support")
    assert [tool["name"] for tool in live] == BUILTIN_TOOLS

    ai_server.network.is_down = True
    ai_server.clock.advance(60.0)
    assert await ai_server.knowledge.available_tools_or_cached("acme-support") == live
    ai_server.clock.advance(240.0)
    with pytest.raises(UpstreamUnavailable):
        await ai_server.knowledge.available_tools_or_cached("acme-support")


async def test_routes_are_cached_per_sip_domain_number_and_application_sid(ai_server: AIServer) -> None:
    knowledge = ai_server.knowledge
    live = await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230001", application_sid=None)
    assert (live.bot_profile_key, live.credits, live.from_cache) == ("acme-support", 500, False)

    ai_server.network.is_down = True
    cached = await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230001", application_sid=None)
    assert (cached.bot_profile_key, cached.credits, cached.has_credits, cached.from_cache) == (
        "acme-support", 500, True, True,
    )
    with pytest.raises(UpstreamUnavailable):
        await knowledge.resolve_tenant_or_cached(sip_domain="acme.sip.twilio.com", to="+15551230001",
                                                 application_sid=None)
    ai_server.clock.advance(300.0)
    with pytest.raises(UpstreamUnavailable):
        await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230001", application_sid=None)


async def test_a_cache_entry_goes_when_the_ai_server_forgets_the_route(ai_server: AIServer, tmp_path: Path) -> None:
    """A number moved away from a tenant must not route there from the cache in the next outage."""
    knowledge = ai_server.knowledge
    await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230002", application_sid=None)
    await load_tenant_yaml(f"sqlite+aiosqlite:///{tmp_path}/ai.db",
                           TENANT_YAML.replace('numbers: ["+15551230002"]', 'numbers: ["+15551239999"]'), tmp_path)
    with pytest.raises(TenantNotFound):
        await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230002", application_sid=None)

    ai_server.network.is_down = True
    with pytest.raises(UpstreamUnavailable):
        await knowledge.resolve_tenant_or_cached(sip_domain=None, to="+15551230002", application_sid=None)

"""Per-call stream URLs on the wire (contract §3): signed over exactly the URL, issued by this deployment,
not expired, and only for the call whose `start` they name; a pre-opened session whose stream lands on
another voice server leaves no trace in the call's record or its charge."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from switchboard.bridge.adapters.tickets_client import AppServerOutbox
from switchboard.bridge.app import create_app as create_voice_app
from switchboard.config import VoiceSettings
from switchboard.simulator.twilio_caller import TwilioCaller
from switchboard.url_tokens import derive_url_token_key, sign_url_token
from tests.bridge.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SERVICE_TOKEN,
    VoiceStack,
    serve_on_loopback,
    voice_stack,
)

TENANT_NUMBER = "+15551230001"
PUBLIC = "https://voice.example.com"


def sample(stack_or_app: Any, name: str, labels: dict[str, str] | None = None) -> float:
    app = stack_or_app.voice_app if isinstance(stack_or_app, VoiceStack) else stack_or_app
    return app.state.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_the_stream_url_is_per_call_and_names_this_replica(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, SWITCHBOARD_INSTANCE_ID="voice-a") as stack:
        async with stack.caller() as first, stack.caller() as second:
            one = await first.place_call(to=TENANT_NUMBER, from_="+15557654321")
            two = await second.place_call(to=TENANT_NUMBER, from_="+15557654322")
        ws_base = stack.voice_url.replace("http://", "ws://")
        assert one.stream_url and two.stream_url and one.stream_url != two.stream_url
        assert one.stream_url.startswith(ws_base + "/twilio-stream/voice-a/")
        assert "?" not in one.stream_url  # Twilio forbids a query string


async def test_a_replayed_stream_url_with_another_calls_start_is_refused_and_touches_no_session(
        tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack, stack.caller() as victim, stack.caller() as attacker:
        await victim.place_call(to=TENANT_NUMBER, from_="+15557654321")
        victim_session = await stack.model.wait_for_session(timeout_s=5)
        await attacker.place_call(to=TENANT_NUMBER, from_="+15557654322")
        attacker_session = await stack.model.wait_for_session(timeout_s=5, index=1)
        # The attacker replays the victim's URL (and its valid signature) with its own call's `start`.
        attacker.answer = victim.answer
        await attacker.connect_stream(custom_parameters={"bot_profile_key": "acme-support"})
        attacker.say_mulaw(b"\x10" * 1600)
        await attacker.wait_for_stream_closed(timeout_s=5)
        assert len(stack.model.sessions) == 2  # no session opened for it
        for session in (victim_session, attacker_session):
            assert session.events_of("input_audio_buffer.append") == []
        assert not any(m.event == "media" for m in attacker.received)
        assert sample(stack, "switchboard_streams_refused_total", {"reason": "call_mismatch"}) == 1
        # The victim's own stream still works with its pre-opened session.
        await victim.connect_stream()
        await victim.wait_for(lambda: any(m.event == "media" for m in victim.received), timeout_s=5)
        assert sample(stack, "switchboard_preopen_sessions_total", {"outcome": "hit"}) == 1
        # A second stream for the victim's call (its URL replayed with its own start) is refused too.
        async with stack.caller(call_sid=victim.call_sid) as replay:
            replay.answer = victim.answer
            await replay.connect_stream()
            await replay.wait_for_stream_closed(timeout_s=5)
        assert sample(stack, "switchboard_streams_refused_total", {"reason": "stream_already_attached"}) == 1
        await victim.hang_up()


async def _upgrade_status(url: str, *, signature_url: str | None = None) -> int:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(signature_url or url, {})
    try:
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=5):
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def test_urls_not_issued_here_expired_or_signed_for_another_url_are_refused_before_accept(
        tmp_path: Path) -> None:
    async with voice_stack(tmp_path) as stack:
        ws_base = stack.voice_url.replace("http://", "ws://") + "/twilio-stream"
        key = derive_url_token_key(SERVICE_TOKEN)
        fields = {"call_sid": "CA" + "1" * 32, "tenant": "acme-support"}
        expired = sign_url_token(key, purpose="stream", fields=fields, expires_at_s=time.time() - 1)
        foreign = sign_url_token(derive_url_token_key("another-deployment"), purpose="stream", fields=fields,
                                 expires_at_s=time.time() + 60)
        other_purpose = sign_url_token(key, purpose="dial", fields=fields, expires_at_s=time.time() + 60)
        valid = sign_url_token(key, purpose="stream", fields=fields, expires_at_s=time.time() + 60)
        assert await _upgrade_status(ws_base) == 403  # the old fixed URL: never issued any more
        assert await _upgrade_status(f"{ws_base}/vm/{expired}") == 403
        assert await _upgrade_status(f"{ws_base}/vm/{foreign}") == 403
        assert await _upgrade_status(f"{ws_base}/vm/{other_purpose}") == 403
        # A signature captured for one call's URL opens no other URL.
        assert await _upgrade_status(f"{ws_base}/vm/{valid}", signature_url=f"{ws_base}/vm/{expired}") == 403
        refused = stack.voice_app.state.metrics.registry
        assert refused.get_sample_value("switchboard_streams_refused_total", {"reason": "expired"}) == 1
        assert refused.get_sample_value("switchboard_streams_refused_total", {"reason": "forged_url"}) == 1
        assert refused.get_sample_value("switchboard_streams_refused_total", {"reason": "not_issued"}) == 1
        assert stack.model.sessions == []


async def test_the_stream_url_follows_public_base_url_mapping(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, PUBLIC_BASE_URL="https://voice.example.com",
                           SWITCHBOARD_INSTANCE_ID="pod-7") as stack, \
            stack.caller(public_base_url="https://voice.example.com") as caller:
        answer = await caller.place_call(to=TENANT_NUMBER, from_="+15557654321")
        assert answer.stream_url is not None
        assert answer.stream_url.startswith("wss://voice.example.com/twilio-stream/pod-7/")
        await caller.connect_stream()  # signed over the public wss:// URL, dialled on loopback
        await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=5)
        await caller.hang_up()


@contextlib.asynccontextmanager
async def second_voice_server(stack: VoiceStack, tmp_path: Path, **overrides: Any) -> AsyncIterator[Any]:
    """Another voice server of the same deployment: same settings, its own name, its own outbox."""
    assert stack.ai_network is not None
    values = {field.alias: getattr(stack.settings, name) for name, field in VoiceSettings.model_fields.items()
              if field.alias}
    values.update(overrides)
    settings = VoiceSettings(**values)
    async with httpx.AsyncClient(transport=stack.app_network) as http:
        outbox = AppServerOutbox("http://app.internal", SERVICE_TOKEN, spool_dir=tmp_path / "outbox-b",
                                 http_client=http, retry_initial_s=0.05, retry_max_s=0.2)
        app = create_voice_app(settings, ai_transport=stack.ai_network, recorder=outbox)
        async with serve_on_loopback(app) as url:
            yield app, url


@pytest.mark.parametrize("shared_state", [True, False], ids=["shared-state", "own-state"])
async def test_a_preopen_miss_leaves_the_record_and_the_charge_to_the_server_that_got_the_stream(
        tmp_path: Path, shared_state: bool) -> None:
    state = {"SWITCHBOARD_STATE_URL": f"sqlite+aiosqlite:///{tmp_path}/state.db"} if shared_state else {}
    # Both servers sit behind one public host, as behind a load balancer.
    async with voice_stack(tmp_path, SWITCHBOARD_INSTANCE_ID="voice-a", SWITCHBOARD_PREOPEN_CLAIM_TIMEOUT_S="1",
                           PUBLIC_BASE_URL=PUBLIC, **state) as stack, \
            second_voice_server(stack, tmp_path, SWITCHBOARD_INSTANCE_ID="voice-b") as (app_b, url_b):
        async with TwilioCaller(stack.voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                                public_base_url=PUBLIC) as caller:
            await caller.place_call(to=TENANT_NUMBER, from_="+15557654321")  # webhook on A: A pre-opens
            preopened = await stack.model.wait_for_session(timeout_s=5)
            await preopened.wait_for_event("response.create", timeout_s=5)  # A's session greets unheard
            caller.voice_base_url = url_b  # ... and the stream lands on B, which opens its own session
            await caller.connect_stream()
            served = await stack.model.wait_for_session(timeout_s=5, index=1)
            await caller.wait_for(lambda: len(caller.marks_echoed) > 0, timeout_s=5)
            await preopened.wait_for_closed(timeout_s=5)  # A closes its unused session (1 s here)
            await caller.wait_for_agent_quiet(quiet_s=0.3, timeout_s=10)
            await asyncio.sleep(0.2)
            assert not caller.is_stream_closed and not served.is_closed
            await caller.hang_up()
        await served.wait_for_closed(timeout_s=5)
        assert sample(stack, "switchboard_preopen_sessions_total", {"outcome": "unused"}) == 1
        assert sample(app_b, "switchboard_preopen_sessions_total", {"outcome": "miss"}) == 1

        async def ended() -> dict[str, Any] | None:
            found = (await stack.app_server.get("/api/conversations", params={"call_sid": caller.call_sid})).json()
            return next((c for c in found["conversations"] if c["status"] == "ended"), None)

        record: dict[str, Any] | None = None
        async with asyncio.timeout(10):
            while (record := await ended()) is None:  # noqa: ASYNC110 - polling the App server's API
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything A would (wrongly) still send arrives in this time
        record = await ended()
        assert record is not None
        assert record["end_reason"] == "caller_hung_up" and record["duration_s"] > 0
        greetings = [m for m in record["messages"] if m["role"] == "assistant"]
        assert len(greetings) == 1  # the greeting B played, not also the one A generated unheard
        # Charged once, for the call B served (one minute started), not zero minutes by A's unused session.
        async with httpx.AsyncClient(transport=stack.ai_network, base_url="http://ai.internal",
                                     headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as ai:
            charge = await ai.post("/voiceagent/charge_call/", json={
                "bot_profile_key": "acme-support", "call_sid": caller.call_sid, "duration_s": 0.0})
        assert charge.json()["already_charged"] is True and charge.json()["minutes"] == 1

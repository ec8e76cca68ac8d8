"""Graceful draining with a real uvicorn process and a real SIGTERM (contract §5)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from switchboard.config import AISettings, AppSettings
from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio
from switchboard.knowledge.app import create_app as create_ai_app
from switchboard.simulator.twilio_caller import TwilioCaller
from switchboard.tickets.app import create_app as create_tickets_app
from tests.bridge.harness import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    SERVICE_TOKEN,
    TENANT_YAML,
    load_tenant_yaml,
    serve_on_loopback,
    wait_until,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def voice_process(tmp_path: Path, **extra_env: str) -> AsyncIterator[tuple[Any, str, FakeRealtimeServer]]:
    ai_url = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_yaml(ai_url, TENANT_YAML, tmp_path)
    ai_app = create_ai_app(AISettings(AI_DATABASE_URL=ai_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    app_app = create_tickets_app(AppSettings(APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db",
                                             SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN))
    port = _free_port()
    voice_url = f"http://127.0.0.1:{port}"
    model = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=400))
    async with serve_on_loopback(ai_app) as ai_base, serve_on_loopback(app_app) as app_base, model:
        env = {
            **os.environ,
            "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": model.realtime_url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "PUBLIC_BASE_URL": voice_url, "AI_SERVER_URL": ai_base, "APP_SERVER_URL": app_base,
            "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "SWITCHBOARD_OUTBOX_DIR": str(tmp_path / "outbox"),
            "SWITCHBOARD_LOG_LEVEL": "WARNING", **extra_env,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.cli", "serve", "voice", "--port", str(port), env=env)
        try:
            async with httpx.AsyncClient() as http, asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(voice_url + "/health-check/live")).status_code == 200:
                            break
                    assert process.returncode is None, "voice server exited during start-up"
                    await asyncio.sleep(0.1)
            yield process, voice_url, model
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def _live_call(voice_url: str, model: FakeRealtimeServer) -> tuple[TwilioCaller, Any]:
    caller = TwilioCaller(voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
    await caller.place_call(to="+15551230001", from_="+15557654321")
    session = await model.wait_for_session(timeout_s=10)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=10)
    await session.wait_for_sent("response.done", timeout_s=10)
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
    return caller, session


@pytest.mark.slow
async def test_sigterm_drains_live_calls_refuses_new_ones_and_exits_when_the_last_call_ends(tmp_path: Path) -> None:
    async with voice_process(tmp_path) as (process, voice_url, model), httpx.AsyncClient(base_url=voice_url) as http:
        caller, session = await _live_call(voice_url, model)
        try:
            assert (await http.get("/health-check/ready")).status_code == 200
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                while (await http.get("/health-check/ready")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            # New calls are refused with a status a load balancer retries elsewhere.
            webhook = await http.post("/twilio-voice-webhook", data={"CallSid": "CA" + "1" * 32})
            assert webhook.status_code in {403, 503}
            async with TwilioCaller(voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as late:
                answer = await late.place_call(to="+15551230001", from_="+15557650000")
                assert answer.status_code == 503
            stream_url = voice_url.replace("http://", "ws://") + "/twilio-stream"
            signature = RequestValidator(AUTH_TOKEN).compute_signature(stream_url, {})
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(stream_url, additional_headers={"X-Twilio-Signature": signature},
                                              open_timeout=5):
                    pass
            assert refused.value.response.status_code == 503
            # The live call goes on: caller audio still reaches the model, the model still reaches the caller.
            appends = session.append_count
            await session.start_response(stream_audio(ms=300))
            heard = len(caller.heard_mulaw)
            await caller.wait_for(lambda: len(caller.heard_mulaw) >= heard + 300 * 8, timeout_s=5)
            await wait_until(lambda: session.append_count >= appends + 20, timeout_s=5)
            assert process.returncode is None
        finally:
            await caller.hang_up()
            await caller.aclose()
        async with asyncio.timeout(15):
            assert await process.wait() == 0


@pytest.mark.slow
async def test_drain_timeout_says_goodbye_to_remaining_calls_then_exits(tmp_path: Path) -> None:
    async with voice_process(tmp_path, SWITCHBOARD_DRAIN_TIMEOUT_S="1") as (process, voice_url, model):
        caller, session = await _live_call(voice_url, model)
        try:
            process.send_signal(signal.SIGTERM)
            goodbye = await session.wait_for_event(
                "response.create", after_index=1, timeout_s=5,
                predicate=lambda e: "goodbye" in e.get("response", {}).get("instructions", "").lower())
            assert goodbye is not None
            await caller.wait_for_stream_closed(timeout_s=10)
            assert len(caller.heard_mulaw) > 0 and not caller.has_unplayed_audio
        finally:
            await caller.aclose()
        async with asyncio.timeout(15):
            assert await process.wait() == 0


@pytest.mark.slow
async def test_a_draining_server_still_takes_the_stream_of_a_call_whose_session_it_preopened(tmp_path: Path) -> None:
    async with voice_process(tmp_path) as (process, voice_url, model), httpx.AsyncClient(base_url=voice_url) as http:
        keeper, _ = await _live_call(voice_url, model)  # keeps the process draining instead of exiting
        async with TwilioCaller(voice_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as caller:
            await caller.place_call(to="+15551230001", from_="+15557650001")  # its session opens here
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                while (await http.get("/health-check/ready")).status_code != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            # Twilio dials the stream URL only now: the call would be lost if the server refused it.
            await caller.connect_stream()
            await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=10)
            await caller.hang_up()
        await keeper.hang_up()
        await keeper.aclose()
        async with asyncio.timeout(15):
            assert await process.wait() == 0

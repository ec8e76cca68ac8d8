"""Opik tracing of whole calls, asserted on what the Opik SDK posts to a fake Opik backend on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Response

from switchboard.bridge.observability import NullObserver
from switchboard.bridge.opik_observer import OpikTracer
from switchboard.bridge.wiring import build_observer_factory
from switchboard.clock import SystemClock
from switchboard.config import VoiceSettings
from switchboard.fakes.realtime_server import function_call
from switchboard.pricing import load_price_table
from tests.bridge.harness import TENANT_YAML, serve_on_loopback
from tests.observability.fake_opik import FakeOpik
from tests.observability.stack import observed_voice_stack

CALLER = "+15557654321"

# gpt-realtime list prices per 1M tokens, written out independently of pricing.json.
RATES = {"input_text": 4.0, "input_cached_text": 0.4, "input_audio": 32.0, "input_cached_audio": 0.4,
         "output_text": 16.0, "output_audio": 64.0}


def _expected_cost(usage: dict[str, Any]) -> float:
    inputs, outputs = usage["input_token_details"], usage["output_token_details"]
    cached = inputs["cached_tokens_details"]
    return (
        (inputs["text_tokens"] - cached["text_tokens"]) * RATES["input_text"]
        + cached["text_tokens"] * RATES["input_cached_text"]
        + (inputs["audio_tokens"] - cached["audio_tokens"]) * RATES["input_audio"]
        + cached["audio_tokens"] * RATES["input_cached_audio"]
        + outputs["text_tokens"] * RATES["output_text"] + outputs["audio_tokens"] * RATES["output_audio"]
    ) / 1_000_000


def _tool_app() -> FastAPI:
    app = FastAPI()

    @app.post("/lookup")
    async def lookup(body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"order_number": body.get("order_number"), "status": "shipped"}

    @app.post("/broken")
    async def broken() -> Response:
        return Response("upstream exploded", status_code=500)

    return app


def _tenant_with_tools(base_url: str) -> str:
    tools = "".join(
        f"      - name: {name}\n"
        f"        description: \"{name}\"\n"
        "        parameters: {type: object, properties: {order_number: {type: string}}}\n"
        f"        http: {{method: POST, url: \"{base_url}/{path}\", allow_private_network: true, timeout_s: 5}}\n"
        for name, path in (("lookup_order", "lookup"), ("cancel_order", "broken"))
    )
    return TENANT_YAML.replace("    credits: 500\n", "    credits: 500\n    tools:\n" + tools, 1)


@pytest.fixture
def fake_opik() -> Iterator[FakeOpik]:
    with FakeOpik() as backend:
        yield backend


def _opik_env(backend: FakeOpik) -> dict[str, str]:
    return {"OPIK_URL_OVERRIDE": backend.url, "OPIK_WORKSPACE": "default", "OPIK_PROJECT_NAME": "switchboard-tests"}


async def _run_tool(session: Any, name: str, arguments: dict[str, Any]) -> None:
    before = len(session.received)
    response = await session.start_response(function_call(name, arguments))
    await response.wait_for_done(timeout_s=5)
    await session.wait_for_event("conversation.item.create", timeout_s=8, after_index=before,
                                 predicate=lambda e: e["item"]["type"] == "function_call_output")
    follow_up = await session.wait_for_event("response.create", timeout_s=5, after_index=before)
    assert follow_up is not None
    active = session.active_response
    if active is not None:
        await active.wait_for_done(timeout_s=5)


async def test_a_call_is_one_trace_with_a_span_per_response_and_tool_carrying_usage_and_cost(
    tmp_path: Path, fake_opik: FakeOpik,
) -> None:
    tracer = OpikTracer.from_environment(_opik_env(fake_opik), prices=load_price_table({}), vendor="openai",
                                         model="gpt-realtime", clock=SystemClock(),
                                         dashboard_base_url="https://app.example.com/")
    try:
        async with serve_on_loopback(_tool_app()) as tool_url, observed_voice_stack(
            tmp_path, tenant_yaml=_tenant_with_tools(tool_url), observer_factory=tracer.observer,
        ) as (stack, _ai, _app), stack.caller() as caller:
            await caller.place_call(to="+15551230001", from_=CALLER)
            session = await stack.model.wait_for_session(timeout_s=5)
            await caller.connect_stream()
            await session.wait_for_event("response.create", timeout_s=5)
            await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, 10)
            await _run_tool(session, "lookup_order", {"order_number": "A-1001"})
            await _run_tool(session, "cancel_order", {"order_number": "A-1001"})
            await caller.hang_up()
            conversation: dict[str, Any] = {}
            async with asyncio.timeout(10):
                while conversation.get("status") != "ended":
                    await asyncio.sleep(0.05)
                    conversation = await stack.conversation(caller.call_sid)
            model_usages = [e["response"]["usage"] for e in session.sent if e["type"] == "response.done"]
        # The voice server ran the tracer's sender and, stopping, sent what was queued: nothing is left.
        assert tracer.sent_traces == 1 and tracer.sent_spans == len(fake_opik.spans())
        assert await tracer.flush(10)
    finally:
        await tracer.aclose(5)

    [trace] = fake_opik.traces()
    # The App server's conversation links to the trace.
    assert conversation["trace_id"] == trace["id"]
    assert trace["name"] == "call" and trace["project_name"] == "switchboard-tests"
    assert trace["input"] == {"tenant": "acme-support", "caller": "+1******4321", "is_sip_call": False}
    metadata = trace["metadata"]
    assert metadata["call_sid"] == caller.call_sid
    # ... and the trace links back to the call's dashboard page.
    assert metadata["dashboard_url"] == f"https://app.example.com/ui/calls/{caller.call_sid}"
    assert metadata["end_reason"] == conversation["end_reason"] == "caller_hung_up"
    assert metadata["model"] == "gpt-realtime" and metadata["price_table_as_of"]
    assert trace["output"]["end_reason"] == "caller_hung_up"
    assert trace["start_time"] < trace["end_time"]

    spans = fake_opik.spans()
    assert {span["trace_id"] for span in spans} == {trace["id"]}
    responses = [span for span in spans if span["type"] == "llm"]
    # One span per response.done the model sent: greeting, two tool-call responses and their follow-ups.
    assert len(responses) == len(model_usages) >= 5
    by_id = {span["metadata"]["response_id"]: span for span in responses}
    done_events = [e["response"] for e in session.sent if e["type"] == "response.done"]
    for response in done_events:
        span = by_id[response["id"]]
        usage = response["usage"]
        assert span["model"] == "gpt-realtime" and span["provider"] == "openai"
        assert span["usage"]["prompt_tokens"] == usage["input_tokens"]
        assert span["usage"]["completion_tokens"] == usage["output_tokens"]
        assert span["usage"]["total_tokens"] == usage["total_tokens"]
        assert span["usage"]["original_usage.input_audio_tokens"] == usage["input_token_details"]["audio_tokens"]
        assert span["usage"]["original_usage.input_text_tokens"] == usage["input_token_details"]["text_tokens"]
        assert span["usage"]["original_usage.input_cached_tokens"] == usage["input_token_details"]["cached_tokens"]
        assert span["usage"]["original_usage.output_audio_tokens"] == usage["output_token_details"]["audio_tokens"]
        assert span["usage"]["original_usage.output_text_tokens"] == usage["output_token_details"]["text_tokens"]
        assert span["total_estimated_cost"] == pytest.approx(_expected_cost(usage), abs=1e-8)
        assert span["start_time"] <= span["end_time"]
    assert metadata["cost_usd"] == pytest.approx(sum(_expected_cost(u) for u in model_usages), abs=1e-6)

    tools = {span["name"]: span for span in spans if span["type"] == "tool"}
    assert set(tools) == {"lookup_order", "cancel_order"}
    lookup = tools["lookup_order"]
    assert lookup["input"] == {"arguments": {"order_number": "A-1001"}}
    assert lookup["output"]["result"]["ok"] is True
    assert lookup["metadata"]["ok"] is True and lookup["metadata"]["duration_ms"] >= 50
    assert "error_info" not in lookup
    broken = tools["cancel_order"]
    assert broken["metadata"]["ok"] is False
    assert broken["error_info"]["exception_type"] == "ToolCallFailed"
    assert broken["output"]["result"]["ok"] is False
    # Only the masked caller number ever leaves for Opik.
    assert b"5557654321" not in fake_opik.all_bodies()


async def test_sending_spans_never_waits_for_a_slow_opik_backend() -> None:
    """Spans are queued in memory and sent by the tracer's own task: a backend that takes 3 s per request
    costs the calls nothing (the margins are wide: this checks "never waits for the backend", not speed)."""
    with FakeOpik(delay_s=3.0) as slow_backend:
        tracer = OpikTracer.from_environment(_opik_env(slow_backend), prices=load_price_table({}),
                                             vendor="openai", model="gpt-realtime", clock=SystemClock(),
                                             flush_interval_s=0.2, batch_size=250)
        sender = asyncio.create_task(tracer.run(), name="opik-sender")
        try:
            usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
                     "input_token_details": {"text_tokens": 5, "audio_tokens": 15, "cached_tokens": 0},
                     "output_token_details": {"text_tokens": 2, "audio_tokens": 8}}
            slowest_s = 0.0
            started = time.perf_counter()
            for call in range(20):
                observer = tracer.observer()
                observer.call_started(call_sid=f"CA{call:032d}", tenant="acme", caller_masked="+1******0000",
                                      is_sip_call=False)
                for response in range(25):
                    before = time.perf_counter()
                    observer.response_done(response_id=f"resp_{response}", status="completed", usage=usage,
                                           started_at=None, ended_at=SystemClock().now())
                    slowest_s = max(slowest_s, time.perf_counter() - before)
                    await asyncio.sleep(0)
            elapsed_s = time.perf_counter() - started
            # 500 spans before the backend could answer a single request.
            assert elapsed_s < 2.5
            assert slowest_s < 1.0
            await asyncio.to_thread(slow_backend.wait_for, lambda: len(slow_backend.spans()) > 0, 20)
            await tracer.aclose(30)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        assert len(slow_backend.spans()) == 500
        # Batched: two requests of 250, not 500 of one.
        assert sum(1 for r in slow_backend.requests if r.path.endswith("/spans/batch")) == 2


async def test_tracing_is_off_without_opik_variables_and_on_with_them(fake_opik: FakeOpik) -> None:
    settings = VoiceSettings(OPENAI_API_KEY="sk-test", TWILIO_AUTH_TOKEN="token")
    assert build_observer_factory(settings, environ={"OPIK_PROJECT_NAME": "only-a-name"}) is NullObserver

    factory = build_observer_factory(settings, environ=_opik_env(fake_opik))
    observer = factory()
    trace_id = observer.call_started(call_sid="CA" + "1" * 32, tenant="acme", caller_masked="+1******0123",
                                     is_sip_call=True)
    assert trace_id is not None and len(trace_id) == 36
    assert factory().call_started(call_sid="CA" + "2" * 32, tenant="acme", caller_masked="+1******0123",
                                  is_sip_call=False) != trace_id
    from switchboard.bridge.timeline import TurnTimeline

    observer.call_ended(end_reason="end_call", duration_s=12.5, usage={}, timeline=TurnTimeline())
    tracer = factory.__self__  # type: ignore[attr-defined]  # the bound OpikTracer.observer
    assert await tracer.flush(10)
    [trace] = fake_opik.traces()
    assert trace["id"] == trace_id
    assert trace["metadata"]["end_reason"] == "end_call" and trace["metadata"]["is_sip_call"] is True
    assert trace["tags"] == ["acme", "end_call"]
    assert trace["metadata"]["dashboard_url"] == "http://127.0.0.1:8082/ui/calls/CA" + "1" * 32  # APP_SERVER_URL
    request = next(r for r in fake_opik.requests if r.path.endswith("/traces/batch"))
    assert request.headers.get("Comet-Workspace") == "default"


async def test_the_trace_links_to_the_dashboard_at_the_app_servers_public_url(fake_opik: FakeOpik) -> None:
    settings = VoiceSettings(OPENAI_API_KEY="sk-test", TWILIO_AUTH_TOKEN="token",
                             APP_SERVER_URL="http://app.internal:8082",
                             SWITCHBOARD_APP_PUBLIC_URL="https://dashboard.example.com/")
    factory = build_observer_factory(settings, environ=_opik_env(fake_opik))
    observer = factory()
    call_sid = "CA" + "3" * 32
    observer.call_started(call_sid=call_sid, tenant="acme", caller_masked="+1******0123", is_sip_call=False)
    from switchboard.bridge.timeline import TurnTimeline

    observer.call_ended(end_reason="caller_hung_up", duration_s=3.0, usage={}, timeline=TurnTimeline())
    tracer = factory.__self__  # type: ignore[attr-defined]  # the bound OpikTracer.observer
    assert await tracer.flush(10)
    [trace] = fake_opik.traces()
    assert trace["metadata"]["dashboard_url"] == f"https://dashboard.example.com/ui/calls/{call_sid}"


async def test_a_backend_that_refuses_or_fails_loses_only_tracing_and_says_so() -> None:
    """A 400 is not retried, a 503 is retried and then given up; flush reports the loss, nothing raises."""
    import httpx

    from switchboard.bridge.timeline import TurnTimeline

    seen: list[int] = []

    def backend(request: httpx.Request) -> httpx.Response:
        status = 400 if request.url.path.endswith("/spans/batch") else 503
        seen.append(status)
        return httpx.Response(status)

    tracer = OpikTracer.from_environment({"OPIK_URL_OVERRIDE": "http://opik.invalid/api"}, prices=load_price_table({}),
                                         vendor="openai", model="gpt-realtime", clock=SystemClock(), retries=1,
                                         transport=httpx.MockTransport(backend))
    observer = tracer.observer()
    observer.call_started(call_sid="CA" + "3" * 32, tenant="acme", caller_masked="+1******0123", is_sip_call=False)
    observer.response_done(response_id="resp_1", status="completed", usage=None, started_at=None,
                           ended_at=SystemClock().now())
    observer.call_ended(end_reason="caller_hung_up", duration_s=3.0, usage={}, timeline=TurnTimeline())
    assert await tracer.flush(10) is False
    assert seen == [400, 503, 503]  # spans refused once; the trace tried twice (retries=1)
    assert tracer.dropped == 2 and tracer.sent_spans == 0 and tracer.sent_traces == 0

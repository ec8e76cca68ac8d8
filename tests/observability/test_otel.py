"""OpenTelemetry across the services: spans recorded with an in-memory exporter, trace context carried
from the voice server to the AI server over a real TCP connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from switchboard.config import SettingsError
from switchboard.tracing import (
    build_tracer_provider,
    instrument_app,
    is_tracing_configured,
    uninstrument_http_clients,
)
from tests.observability.stack import observed_voice_stack

CALLER = "+15557654321"


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        yield spans, provider
    finally:
        uninstrument_http_clients()
        provider.shutdown()


def _server_spans(spans: Any, route: str) -> list[Any]:
    return [s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("http.route") == route]


async def test_the_webhook_and_the_ai_server_share_a_trace_through_traceparent(
    tmp_path: Path, exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = exporter

    def instrument(app: Any, service: str) -> None:
        instrument_app(app, service, tracer_provider=provider)

    async with observed_voice_stack(tmp_path, instrument=instrument) as (stack, _ai, _app), \
            stack.caller() as caller:
        answer = await caller.place_call(to="+15551230001", from_=CALLER)
        assert answer.status_code == 200
        session = await stack.model.wait_for_session(timeout_s=5)
        await caller.connect_stream()
        await session.wait_for_event("response.create", timeout_s=5)
        await caller.hang_up()

    finished = spans.get_finished_spans()
    [webhook] = _server_spans(finished, "/twilio-voice-webhook")
    assert webhook.attributes.get("http.request.method", webhook.attributes.get("http.method")) == "POST"
    # The voice server's httpx request to the AI server is a client span under the webhook ...
    clients = [s for s in finished if s.kind == SpanKind.CLIENT and s.context.trace_id == webhook.context.trace_id]
    assert clients, "no httpx client span in the webhook's trace"
    # ... and the AI server continued that trace: its server span's parent is the client span, which it can
    # only know from the traceparent header on the request.
    ai_server_spans = [s for s in finished if s.kind == SpanKind.SERVER and s.parent is not None
                       and s.parent.span_id in {c.context.span_id for c in clients}]
    assert ai_server_spans
    assert {s.context.trace_id for s in ai_server_spans} == {webhook.context.trace_id}
    # The webhook resolved the tenant; the call it started fetched its profile and tools, all in one trace.
    routes = {s.attributes.get("http.route") for s in ai_server_spans}
    assert {"/voiceagent/resolve_tenant/", "/voiceagent/call_profile/", "/voiceagent/get_available_tools/"} <= routes
    # The Media Stream and the probes are never traced.
    assert not [s for s in finished if "twilio-stream" in str(s.attributes.get("http.route", ""))
                or "twilio-stream" in s.name]
    assert not [s for s in finished if "/metrics" in s.name or "health-check" in s.name]


def test_tracing_is_off_unless_the_otel_variables_ask_for_it() -> None:
    assert not is_tracing_configured({})
    assert not is_tracing_configured({"OTEL_SERVICE_NAME": "voice"})
    assert is_tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert is_tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not is_tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                      "OTEL_SDK_DISABLED": "true"})
    assert not is_tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                      "OTEL_TRACES_EXPORTER": "none"})


def test_an_exporter_this_installation_lacks_stops_start_up_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        build_tracer_provider("voice", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                                        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        build_tracer_provider("voice", {"OTEL_TRACES_EXPORTER": "zipkin"})
    provider = build_tracer_provider("ai", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    try:
        assert provider.resource.attributes["service.name"] == "switchboard-ai"
    finally:
        provider.shutdown()


async def test_the_outbox_posts_to_the_app_server_with_a_client_span_and_traceparent(
    tmp_path: Path, exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    """The outbox's own HTTP client (aiohttp, traced by hand) continues the trace like the httpx ones."""
    import asyncio
    import contextlib
    from datetime import UTC, datetime

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from switchboard.bridge.adapters.tickets_client import AppServerOutbox
    from switchboard.fakes.loopback import LoopbackServer
    from switchboard.tracing import instrument_http_clients

    spans, provider = exporter
    instrument_http_clients(provider)
    seen: list[dict[str, str]] = []

    async def conversation(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"ok": True, "call_sid": request.path_params["call_sid"]})

    app = Starlette(routes=[Route("/api/conversations/{call_sid}", conversation, methods=["PUT"])])
    async with LoopbackServer(app) as server:
        outbox = AppServerOutbox(server.base_url, "service-token-0123456789", spool_dir=tmp_path / "outbox")
        runner = asyncio.create_task(outbox.run())
        try:
            outbox.open_conversation_nowait("CA" + "1" * 32, tenant="acme", caller="+15557654321",
                                            started_at=datetime.now(UTC), trace_id=None)
            async with asyncio.timeout(5):
                while outbox.delivered_count < 1:  # noqa: ASYNC110 - observable counter, no event
                    await asyncio.sleep(0.02)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await outbox.aclose()
    [headers] = seen
    assert headers["authorization"] == "Bearer service-token-0123456789"
    [client] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert client.attributes["http.request.method"] == "PUT"
    assert client.attributes["http.response.status_code"] == 200
    trace_id, span_id = headers["traceparent"].split("-")[1:3]
    assert int(trace_id, 16) == client.context.trace_id and int(span_id, 16) == client.context.span_id

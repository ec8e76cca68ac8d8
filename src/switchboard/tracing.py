"""OpenTelemetry for the services: a server span per HTTP request (FastAPI), a client span per outgoing
httpx request with the W3C `traceparent` header on it, so a call's webhook, the AI server's answer and
the App server's records share one trace; exported over OTLP/HTTP as the standard OTEL_* variables say.

Off unless those variables ask for it. The Media Stream WebSocket, probes and /metrics are never traced:
the stream carries 50 frames a second each way and the ASGI middleware would wrap every one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from switchboard.config import SettingsError

EXCLUDED_URLS = "/health-check/,/metrics,/twilio-stream"

_providers: dict[str, Any] = {}
# The provider of the process's client spans, for the clients we trace by hand (the outbox's aiohttp).
_client_provider: Any = None


def is_tracing_configured(environ: Mapping[str, str]) -> bool:
    """True when the OTEL_* variables ask for trace export (an OTLP endpoint, or an explicit exporter)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def build_tracer_provider(service: str, environ: Mapping[str, str]) -> Any:
    """A TracerProvider exporting in batches from a background thread, configured by OTEL_* variables.

    `service.name` is OTEL_SERVICE_NAME, else `switchboard-<service>`; OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER and the OTEL_EXPORTER_OTLP_* endpoint, headers, timeout and compression are
    read by the SDK itself.

    Raises:
        SettingsError: an exporter or protocol this installation can't provide was asked for.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter_name = (environ.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        if protocol != "http/protobuf":
            raise SettingsError(f"setting OTEL_EXPORTER_OTLP_PROTOCOL is invalid: {protocol!r} (only http/protobuf "
                                f"is installed)")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise SettingsError(f"setting OTEL_TRACES_EXPORTER is invalid: {exporter_name!r} (use otlp, console or none)")
    attributes: dict[str, str] = {}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = f"switchboard-{service}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_app(app: Any, service: str, *, tracer_provider: Any = None,
                   environ: Mapping[str, str] | None = None) -> None:
    """Trace one service's FastAPI app and every httpx client of the process.

    With no `tracer_provider`, one is built from the OTEL_* variables (once per service per process);
    nothing happens when they don't ask for tracing. Tests pass their own provider.
    """
    if tracer_provider is None:
        env = os.environ if environ is None else environ
        if not is_tracing_configured(env):
            return
        tracer_provider = _providers.get(service)
        if tracer_provider is None:
            tracer_provider = _providers[service] = build_tracer_provider(service, env)
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, excluded_urls=EXCLUDED_URLS,
                                       exclude_spans=["receive", "send"])
    instrument_http_clients(tracer_provider)


def instrument_http_clients(tracer_provider: Any) -> None:
    """Client spans and `traceparent` on every httpx request of the process (the real transports, patched once)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    global _client_provider
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider)
        _client_provider = tracer_provider


def uninstrument_http_clients() -> None:
    """Undo `instrument_http_clients` (tests that instrument with a provider of their own)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    global _client_provider
    _client_provider = None
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def client_tracer(name: str) -> Any:
    """A tracer for client spans made by hand, from the provider `instrument_http_clients` was given
    (OpenTelemetry's no-op tracer while tracing is off)."""
    from opentelemetry import trace

    return trace.get_tracer(name, tracer_provider=_client_provider)

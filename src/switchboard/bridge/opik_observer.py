"""Opik tracing of calls: one trace per call, a span per model response and per tool call, with usage and cost.

Nothing here does I/O or waits: the Opik SDK puts each span and trace on an in-memory queue (bounded,
drop-oldest) and its own threads send them in batches. A span is created once, complete, when its
response or tool call has finished, and the trace when the call ends (Opik accepts spans before their
trace), so no update can race a create in the SDK's batches. A tracing failure is logged and never
reaches the call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from switchboard.bridge.observability import CallObserver
from switchboard.bridge.timeline import TurnTimeline
from switchboard.clock import Clock
from switchboard.logs import get_logger
from switchboard.pricing import PriceTable, RealtimeTokens, realtime_tokens

log = get_logger("switchboard.opik")

OPIK_LOCATION_VARIABLES = ("OPIK_URL_OVERRIDE", "OPIK_API_KEY")

# Opik's SDK, unless told otherwise, reports its own errors to Comet's Sentry (set up at import), sends
# product analytics, logs INFO lines of its own to stderr and waits without bound to flush at exit.
# Our defaults: none of those; an operator's own OPIK_* setting wins.
SDK_DEFAULTS = {
    "OPIK_SENTRY_ENABLE": "false",
    "OPIK_ANALYTICS_ENABLE": "false",
    "OPIK_CONSOLE_LOGGING_LEVEL": "WARNING",
    "OPIK_DEFAULT_FLUSH_TIMEOUT": "5",
}


_sdk_prepared = False


def _prepare_sdk() -> None:
    """Our SDK defaults, and a CA-bundle path turned into an SSLContext before Opik builds its httpx client
    (given SSL_CERT_FILE, Opik 2.2 passes httpx the path, which httpx 0.28 deprecates)."""
    global _sdk_prepared
    for name, value in SDK_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if _sdk_prepared:
        return
    import ssl

    from opik import hooks

    class _CABundleAsContext(hooks.HttpxClientHook):
        def __init__(self) -> None:
            super().__init__(client_modifier=None, client_init_arguments=None)

        def update_init_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
            verify = kwargs.get("verify")
            if isinstance(verify, str):
                kwargs["verify"] = ssl.create_default_context(cafile=verify)
            return kwargs

    hooks.add_httpx_client_hook(_CABundleAsContext())
    _sdk_prepared = True


def is_opik_configured(environ: Mapping[str, str]) -> bool:
    """Tracing is on when Opik's variables say where to send traces (a URL, or an API key for Comet)."""
    return any(environ.get(name) for name in OPIK_LOCATION_VARIABLES)


def _tool_payload(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _usage_fields(tokens: RealtimeTokens, usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI-style totals (what Opik's UI shows) plus each priced kind of token."""
    input_total = usage.get("input_tokens")
    output_total = usage.get("output_tokens")
    prompt = input_total if isinstance(input_total, int) else tokens.input_total
    completion = output_total if isinstance(output_total, int) else tokens.output_total
    total = usage.get("total_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if isinstance(total, int) else prompt + completion,
        "input_text_tokens": tokens.input_text + tokens.input_cached_text,
        "input_audio_tokens": tokens.input_audio + tokens.input_cached_audio,
        "input_cached_tokens": tokens.input_cached_text + tokens.input_cached_audio,
        "input_cached_text_tokens": tokens.input_cached_text,
        "input_cached_audio_tokens": tokens.input_cached_audio,
        "output_text_tokens": tokens.output_text,
        "output_audio_tokens": tokens.output_audio,
    }


class OpikTracer:
    """One Opik client for the process; `observer()` builds the per-call observer (an `ObserverFactory`)."""

    def __init__(self, client: Any, *, prices: PriceTable, vendor: str, model: str, clock: Clock) -> None:
        from opik import id_helpers

        self.client = client
        self.prices = prices
        self.vendor = vendor
        self.model = model
        self.clock = clock
        self.new_id: Callable[[], str] = id_helpers.generate_id

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, prices: PriceTable, vendor: str, model: str,
                         clock: Clock) -> OpikTracer:
        """Connect with Opik's own variables (OPIK_URL_OVERRIDE, OPIK_API_KEY, OPIK_WORKSPACE,
        OPIK_PROJECT_NAME). Creating the client does no network I/O; the SDK's sender threads start here."""
        _prepare_sdk()
        import opik

        client = opik.Opik(
            host=environ.get("OPIK_URL_OVERRIDE") or None, api_key=environ.get("OPIK_API_KEY") or None,
            workspace=environ.get("OPIK_WORKSPACE") or None, project_name=environ.get("OPIK_PROJECT_NAME") or None,
            _show_misconfiguration_message=False,
        )
        return cls(client, prices=prices, vendor=vendor, model=model, clock=clock)

    def observer(self) -> CallObserver:
        return OpikCallObserver(self)

    def flush(self, timeout_s: float) -> bool:
        """Send everything queued. Blocks the calling thread: from async code use `asyncio.to_thread`."""
        return bool(self.client.flush(timeout=timeout_s))

    def close(self, timeout_s: float) -> None:
        """Flush and stop the SDK's threads. Blocks: from async code use `asyncio.to_thread`."""
        self.client.end(timeout=timeout_s)


class OpikCallObserver:
    """The trace of one call. Every method returns at once; failures are logged, never raised."""

    def __init__(self, tracer: OpikTracer) -> None:
        self._tracer = tracer
        clock = tracer.clock
        # Runner times are the Clock's monotonic seconds; Opik wants wall-clock datetimes.
        self._anchor_now = clock.now()
        self._anchor_wall = clock.wall()
        self._started_at = self._anchor_now
        self._trace_id: str | None = None
        self._attributes: dict[str, Any] = {}
        self._cost_total = 0.0
        self._responses = 0
        self._tool_calls = 0
        self._failed = False

    def _wall(self, now: float) -> datetime:
        return self._anchor_wall + timedelta(seconds=now - self._anchor_now)

    def _trace(self) -> str:
        if self._trace_id is None:
            self._trace_id = self._tracer.new_id()
        return self._trace_id

    def _report_failure(self, where: str, exc: Exception) -> None:
        if not self._failed:  # once per call: a broken tracer must not flood the logs
            self._failed = True
            log.warning("opik.trace_failed", where=where, error=type(exc).__name__, detail=str(exc)[:200])

    def call_started(self, *, call_sid: str, tenant: str, caller_masked: str, is_sip_call: bool) -> str | None:
        self._started_at = self._tracer.clock.now()
        self._attributes = {"call_sid": call_sid, "tenant": tenant, "caller": caller_masked,
                            "is_sip_call": is_sip_call}
        return self._trace()

    def response_done(self, *, response_id: str, status: str, usage: dict[str, Any] | None,
                      started_at: float | None, ended_at: float) -> None:
        try:
            tracer = self._tracer
            tokens = realtime_tokens(usage)
            cost = tracer.prices.realtime_cost(tracer.vendor, tracer.model, tokens)
            if cost is not None:
                self._cost_total += cost.total
            self._responses += 1
            metadata: dict[str, Any] = {"response_id": response_id, "status": status}
            if cost is not None:
                metadata.update(cost_usd=cost.total, cost_parts_usd=cost.parts, currency=cost.currency,
                                price_table_as_of=tracer.prices.as_of)
            else:
                metadata["cost"] = f"{tracer.vendor}/{tracer.model} is not in the price table"
            tracer.client.span(
                trace_id=self._trace(), name="response", type="llm",
                start_time=self._wall(started_at if started_at is not None else ended_at),
                end_time=self._wall(ended_at), metadata=metadata, output={"status": status},
                usage=_usage_fields(tokens, usage or {}) if usage else None,
                model=tracer.model, provider=tracer.vendor if tracer.vendor != "local" else None,
                total_cost=cost.total if cost is not None else None,
            )
        except Exception as exc:  # tracing never ends a call
            self._report_failure("response_done", exc)

    def tool_finished(self, *, name: str, arguments: str, result: str, duration_ms: float, ok: bool) -> None:
        try:
            tracer = self._tracer
            ended_at = tracer.clock.now()
            self._tool_calls += 1
            output = _tool_payload(result)
            # A tool that answered `{"ok": false, ...}` failed too, whatever carried the answer back.
            failed = not ok or (isinstance(output, dict) and output.get("ok") is False)
            error_info = None
            if failed:
                message = output.get("error") if isinstance(output, dict) else None
                error_info = {"exception_type": "ToolCallFailed", "message": str(message or result)[:500],
                              "traceback": ""}
            tracer.client.span(
                trace_id=self._trace(), name=name, type="tool",
                start_time=self._wall(ended_at - duration_ms / 1000.0), end_time=self._wall(ended_at),
                input={"arguments": _tool_payload(arguments)}, output={"result": output},
                metadata={"tool": name, "duration_ms": round(duration_ms, 3), "ok": not failed},
                error_info=error_info,
            )
        except Exception as exc:  # tracing never ends a call
            self._report_failure("tool_finished", exc)

    def call_ended(self, *, end_reason: str, duration_s: float, usage: dict[str, Any],
                   timeline: TurnTimeline) -> None:
        try:
            tracer = self._tracer
            now = tracer.clock.now()
            attributes = self._attributes
            tenant = str(attributes.get("tenant") or "")
            metadata = {
                **attributes, "end_reason": end_reason, "duration_s": round(duration_s, 3),
                "vendor": tracer.vendor, "model": tracer.model, "usage": usage,
                "cost_usd": round(self._cost_total, 8), "currency": tracer.prices.currency,
                "price_table_as_of": tracer.prices.as_of, "responses": self._responses,
                "tool_calls": self._tool_calls, "latency": timeline.summary(), "turns": timeline.turns,
                "barge_in_reactions_ms": timeline.barge_in_reactions_ms,
            }
            tracer.client.trace(
                id=self._trace(), name="call", start_time=self._wall(self._started_at), end_time=self._wall(now),
                input={key: attributes[key] for key in ("tenant", "caller", "is_sip_call") if key in attributes},
                output={"end_reason": end_reason, "duration_s": round(duration_s, 3)},
                metadata=metadata, tags=[tag for tag in (tenant, end_reason) if tag],
            )
        except Exception as exc:  # tracing never ends a call
            self._report_failure("call_ended", exc)

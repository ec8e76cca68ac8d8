"""Opik tracing of calls: one trace per call, a span per model response and per tool call, with usage and cost.

Configuration is Opik's own (`opik.config`: OPIK_URL_OVERRIDE, OPIK_API_KEY, OPIK_WORKSPACE,
OPIK_PROJECT_NAME, or ~/.opik.config), the ids are the SDK's (UUIDv7) and the bodies are the ones the
SDK posts to Opik's REST API (`/v1/private/spans/batch`, `/v1/private/traces/batch`). The sending is
ours: the SDK's message pipeline (per-span processors, replay database, size estimation, gzip in its
threads) measured about 1.4 ms of CPU per span, which alone broke the 5 % overhead budget of a call
(docs/benchmarks.md). Here a span is a dict appended to a bounded in-memory queue (microseconds, no
I/O, never waits); one sender task posts whatever is queued, batched across calls, once a second,
with a few retries; if Opik is down long enough for the queue to fill, the oldest spans are dropped
and counted. A span is created once, complete, when its response or tool call has finished, and the
trace when the call ends (Opik accepts spans before their trace). A tracing failure is logged and
never reaches the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson

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


def _opik_config(environ: Mapping[str, str]) -> Any:
    """Opik's own configuration (its variables, or ~/.opik.config), with our SDK defaults applied first."""
    for name, value in SDK_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from opik.config import get_from_user_inputs

    return get_from_user_inputs(
        url_override=environ.get("OPIK_URL_OVERRIDE") or None, api_key=environ.get("OPIK_API_KEY") or None,
        workspace=environ.get("OPIK_WORKSPACE") or None, project_name=environ.get("OPIK_PROJECT_NAME") or None,
    )


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


def _opik_usage(usage: dict[str, int]) -> dict[str, int]:
    """Usage as Opik's SDK sends it: the OpenAI-style totals plus every reported key as `original_usage.<key>`."""
    result: dict[str, int] = {key: usage[key] for key in ("completion_tokens", "prompt_tokens", "total_tokens") if key in usage}
    result.update({f"original_usage.{key}": value for key, value in usage.items()})
    return result


def _opik_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OpikTracer:
    """One per process: builds per-call observers (`observer`, an `ObserverFactory`) and sends what they
    record. Run `run()` for as long as calls are traced; `aclose()` sends what is left, bounded."""

    def __init__(self, *, base_url: str, headers: Mapping[str, str], project_name: str, prices: PriceTable,
                 vendor: str, model: str, clock: Clock, flush_interval_s: float = 1.0, batch_size: int = 200,
                 max_queued: int = 20_000, request_timeout_s: float = 10.0, retries: int = 3,
                 transport: httpx.AsyncBaseTransport | None = None, dashboard_base_url: str | None = None) -> None:
        from opik import id_helpers

        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.project_name = project_name
        self.prices = prices
        self.vendor = vendor
        self.model = model
        self.clock = clock
        # The App server's public URL: each call's trace links to its dashboard page under it.
        self.dashboard_base_url = dashboard_base_url.rstrip("/") if dashboard_base_url else None
        self.new_id: Callable[[], str] = id_helpers.generate_id
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self._transport = transport
        self._spans: deque[dict[str, Any]] = deque(maxlen=max_queued)
        self._traces: deque[dict[str, Any]] = deque(maxlen=max_queued)
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0
        self.sent_spans = 0
        self.sent_traces = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], *, prices: PriceTable, vendor: str, model: str,
                         clock: Clock, **options: Any) -> OpikTracer:
        """Opik's own variables (OPIK_URL_OVERRIDE, OPIK_API_KEY, OPIK_WORKSPACE, OPIK_PROJECT_NAME). No I/O."""
        config = _opik_config(environ)
        headers = {"Comet-Workspace": config.workspace, "Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = config.api_key
        return cls(base_url=config.url_override, headers=headers, project_name=config.project_name,
                   prices=prices, vendor=vendor, model=model, clock=clock, **options)

    def observer(self) -> CallObserver:
        return OpikCallObserver(self)

    # ------------------------------------------------------------------ queueing (event loop, no I/O)
    def _enqueue(self, queue: deque[dict[str, Any]], item: dict[str, Any]) -> None:
        if len(queue) == queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("opik.queue_full", dropped=self.dropped)
        queue.append(item)
        self._idle.clear()
        self._queued.set()

    def submit_span(self, span: dict[str, Any]) -> None:
        span["project_name"] = self.project_name
        self._enqueue(self._spans, span)

    def submit_trace(self, trace: dict[str, Any]) -> None:
        trace["project_name"] = self.project_name
        self._enqueue(self._traces, trace)

    # ------------------------------------------------------------------ sending (one task)
    async def run(self) -> None:
        """Send batches until cancelled: spans first, then traces, every `flush_interval_s` when there is work."""
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=httpx.Timeout(self.request_timeout_s, connect=min(5.0, self.request_timeout_s)),
                                     transport=self._transport) as http:
            while True:
                await self._queued.wait()
                await asyncio.sleep(self.flush_interval_s)
                try:
                    await self._send_all(http)
                except Exception as exc:  # tracing never takes the server down
                    log.warning("opik.send_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _send_all(self, http: httpx.AsyncClient) -> None:
        self._queued.clear()
        for queue, path, key in ((self._spans, "/v1/private/spans/batch", "spans"),
                                 (self._traces, "/v1/private/traces/batch", "traces")):
            while queue:
                batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                if not await self._post(http, path, {key: batch}):
                    self.dropped += len(batch)
                elif key == "spans":
                    self.sent_spans += len(batch)
                else:
                    self.sent_traces += len(batch)
        if not self._spans and not self._traces:
            self._idle.set()

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> bool:
        try:
            content = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError) as exc:
            log.warning("opik.batch_unserialisable", path=path, error=str(exc)[:200])
            return False
        delay_s = 0.5
        for attempt in range(self.retries + 1):
            try:
                response = await http.post(path, content=content)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # Opik refused this batch: retrying will not help
            if attempt < self.retries:
                await asyncio.sleep(delay_s)
                delay_s *= 2
        log.warning("opik.batch_dropped", path=path, items=len(next(iter(body.values()))), problem=problem)
        return False

    async def aclose(self, timeout_s: float) -> None:
        """Wait (bounded) until everything queued is sent; `run()` is then cancelled by its owner."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()

    async def flush(self, timeout_s: float) -> bool:
        """Send what is queued now (tests, shutdown); True if everything was accepted."""
        before = self.dropped
        async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers,
                                     timeout=httpx.Timeout(timeout_s), transport=self._transport) as http:
            async with asyncio.timeout(timeout_s):
                await self._send_all(http)
        return self.dropped == before and not self._spans and not self._traces


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
        base = self._tracer.dashboard_base_url
        if base is not None:
            self._attributes["dashboard_url"] = f"{base}/ui/calls/{quote(call_sid, safe='')}"
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
            span: dict[str, Any] = {
                "id": tracer.new_id(), "trace_id": self._trace(), "name": "response", "type": "llm",
                "start_time": _opik_time(self._wall(started_at if started_at is not None else ended_at)),
                "end_time": _opik_time(self._wall(ended_at)), "output": {"status": status},
                "metadata": metadata, "model": tracer.model, "source": "sdk",
            }
            if tracer.vendor != "local":
                span["provider"] = tracer.vendor
            if usage:
                fields = _usage_fields(tokens, usage)
                metadata["usage"] = fields
                span["usage"] = _opik_usage(fields)
            if cost is not None:
                span["total_estimated_cost"] = cost.total
            tracer.submit_span(span)
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
            span: dict[str, Any] = {
                "id": tracer.new_id(), "trace_id": self._trace(), "name": name, "type": "tool",
                "start_time": _opik_time(self._wall(ended_at - duration_ms / 1000.0)),
                "end_time": _opik_time(self._wall(ended_at)),
                "input": {"arguments": _tool_payload(arguments)}, "output": {"result": output},
                "metadata": {"tool": name, "duration_ms": round(duration_ms, 3), "ok": not failed}, "source": "sdk",
            }
            if error_info is not None:
                span["error_info"] = error_info
            tracer.submit_span(span)
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
            tracer.submit_trace({
                "id": self._trace(), "name": "call", "start_time": _opik_time(self._wall(self._started_at)),
                "end_time": _opik_time(self._wall(now)),
                "input": {key: attributes[key] for key in ("tenant", "caller", "is_sip_call") if key in attributes},
                "output": {"end_reason": end_reason, "duration_s": round(duration_s, 3)},
                "metadata": metadata, "tags": [tag for tag in (tenant, end_reason) if tag], "source": "sdk",
            })
        except Exception as exc:  # tracing never ends a call
            self._report_failure("call_ended", exc)

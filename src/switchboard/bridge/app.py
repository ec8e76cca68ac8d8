"""The voice server's ASGI app: Twilio's webhook (TwiML), the Media Stream WebSocket, health and metrics.

`create_app(settings)` reads nothing from the environment; everything comes in through settings
and the optional ports (clock, transports) that tests inject.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from switchboard.bridge.adapters.knowledge_client import KnowledgeClient, ProfileCache
from switchboard.bridge.adapters.twilio_stream import TwilioStream
from switchboard.bridge.call.events import StreamStarted
from switchboard.bridge.call_runner import (
    AppOutbox,
    CallContext,
    CallDependencies,
    ConversationRecorder,
    LiveCall,
)
from switchboard.bridge.metrics import VoiceMetrics
from switchboard.bridge.observability import NullObserver, ObserverFactory
from switchboard.bridge.scale_out import CallCoordinator, build_voice_state, sweep_hooks
from switchboard.bridge.stream_gate import StreamGate
from switchboard.bridge.stream_urls import STREAM_PATH, is_stream_path, issue_stream_url
from switchboard.bridge.tools import ToolRunner
from switchboard.bridge.twilio_signatures import SIGNATURE_REFUSALS, TwilioSignatures
from switchboard.bridge.twiml import apology_twiml, stream_twiml
from switchboard.bridge.warm_transfer import transfer_router
from switchboard.bridge.wire.twilio_media import StreamConnected, TwilioProtocolError, parse_twilio_message
from switchboard.bridge.wiring import realtime_model
from switchboard.clock import Clock, SystemClock
from switchboard.config import SettingsError, VoiceSettings
from switchboard.errors import TenantNotFound, UpstreamError
from switchboard.http_clients import build_http_client
from switchboard.logs import get_logger, mask_phone, start_call_context
from switchboard.pricing import load_price_table
from switchboard.state.sql_store import is_shared_state_url
from switchboard.url_tokens import derive_url_token_key

log = get_logger("switchboard.voice")

WEBHOOK_PATH = "/twilio-voice-webhook"
RETRY_AFTER_S = "5"
BUSY_SENTENCE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
NO_CREDITS_SENTENCE = "Sorry, this line can't take calls at the moment. Please try again later. Goodbye."


@dataclass(slots=True)
class CallRegistry:
    """Live calls of this process by call SID; pre-opened ones wait here for their stream."""

    calls: dict[str, LiveCall] = field(default_factory=dict)
    draining: bool = False
    tasks: asyncio.TaskGroup | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self, call: LiveCall) -> None:
        if self.tasks is None:
            raise RuntimeError("the voice app's lifespan is not running")
        self.calls[call.context.call_sid] = call
        self.idle.clear()
        self.tasks.create_task(self._run(call), name=f"call-{call.context.call_sid[-6:]}")

    async def run_inline(self, call: LiveCall) -> None:
        self.calls[call.context.call_sid] = call
        self.idle.clear()
        await self._run(call)

    async def _run(self, call: LiveCall) -> None:
        try:
            await call.run()
        except Exception:
            # Never into the app's TaskGroup: one call's failure must not take the server (and every other
            # call) down with it. `call.run()` handles call-level failures; this is the last resort.
            log.exception("call.teardown_failed", call_sid=call.context.call_sid)
        finally:
            if self.calls.get(call.context.call_sid) is call:
                del self.calls[call.context.call_sid]
            if not self.calls:
                self.idle.set()

    def say_goodbye_all(self, reason: str) -> None:
        for call in list(self.calls.values()):
            call.request_goodbye(reason)

    @property
    def live_count(self) -> int:
        return len(self.calls)


def public_base_url(settings: VoiceSettings, request_url: str, headers: Any) -> str:
    """The base URL Twilio used: PUBLIC_BASE_URL, or rebuilt from the request behind a proxy."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    parts = urlsplit(request_url)
    scheme = headers.get("x-forwarded-proto") or parts.scheme
    host = headers.get("x-forwarded-host") or headers.get("host") or parts.netloc
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{host}"


def _caller_number(from_value: str) -> str:
    """The caller's number; for SIP, the user part of the `From` URI."""
    value = from_value.strip()
    if value.startswith(("sip:", "sips:")):
        user = value.split(":", 1)[1].split("@", 1)[0]
        return user.split(";", 1)[0]
    return value


def _check_outbox_dir(outbox_dir: Path) -> None:
    """The App server outbox spools locally (no shared state): an unusable folder stops start-up, rather
    than the outbox failing after the server has said it is ready.

    Raises:
        SettingsError: naming SWITCHBOARD_OUTBOX_DIR and the folder.
    """
    from switchboard.bridge.adapters.tickets_client import check_spool_dir

    try:
        check_spool_dir(outbox_dir)
    except OSError as exc:
        raise SettingsError(
            f"setting SWITCHBOARD_OUTBOX_DIR is unusable: cannot create or write the outbox spool in "
            f"{outbox_dir.absolute()} ({exc.strerror or type(exc).__name__})"
        ) from None


def create_app(
    settings: VoiceSettings,
    *,
    clock: Clock | None = None,
    ai_transport: httpx.AsyncBaseTransport | None = None,
    recorder: ConversationRecorder | None = None,
    tools: Any = None,
    call_control: Any = None,
    observer_factory: ObserverFactory | None = None,
) -> FastAPI:
    """The voice server. Ports left as None are built from settings at start-up: the App server
    outbox (APP_SERVER_URL), the Twilio REST client (TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN) and the
    tool runner.

    Raises:
        SettingsError: TWILIO_AUTH_TOKEN is missing while signatures are validated, or the outbox spools
            locally and SWITCHBOARD_OUTBOX_DIR cannot be created or written.
    """
    if settings.twilio_validate_signatures and not settings.twilio_auth_token:
        raise SettingsError("setting TWILIO_AUTH_TOKEN is required while TWILIO_VALIDATE_SIGNATURES is true")
    if recorder is None and settings.app_server_url and not is_shared_state_url(settings.switchboard_state_url):
        _check_outbox_dir(Path(settings.outbox_dir))
    clock = clock or SystemClock()
    metrics = VoiceMetrics()
    registry = CallRegistry()
    registry.idle.set()
    signatures = TwilioSignatures(settings.twilio_auth_token or "", settings.webhook_shared_keys)
    url_key = derive_url_token_key(settings.switchboard_service_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ai_http = build_http_client(
            base_url=settings.ai_server_url, timeout_s=settings.http_timeout_s,
            bearer_token=settings.switchboard_service_token, transport=ai_transport,
        )
        knowledge = KnowledgeClient(ai_http, cache=ProfileCache(clock))
        app.state.knowledge = knowledge
        owned: list[Any] = []
        state = build_voice_state(settings)
        await state.start()
        owned.append(state)
        coordinator = CallCoordinator(state, settings, clock, metrics)
        app.state.coordinator = coordinator
        outbox: ConversationRecorder | None = recorder
        adopt_records = None
        if outbox is None and settings.app_server_url:
            from switchboard.bridge.adapters.shared_spool import SharedSpool
            from switchboard.bridge.adapters.tickets_client import AppServerOutbox

            # With shared state, undelivered records live there: another server delivers them if this one goes.
            app_outbox = AppServerOutbox(
                settings.app_server_url, settings.switchboard_service_token, spool_dir=Path(settings.outbox_dir),
                spool=SharedSpool(state, settings.instance_id) if state.is_shared else None,
                request_timeout_s=settings.http_timeout_s,
            )
            if state.is_shared:
                adopt_records = app_outbox.adopt_records
            outbox = app_outbox
            owned.append(outbox)
        control = call_control
        if control is None and settings.twilio_account_sid and settings.twilio_auth_token:
            from switchboard.bridge.adapters.twilio_rest import TwilioCallControl

            control = TwilioCallControl(
                settings.twilio_account_sid, settings.twilio_auth_token, api_base_url=settings.twilio_api_base_url,
                timeout_s=settings.http_timeout_s,
            )
            owned.append(control)
        vendor_http = build_http_client(timeout_s=settings.transcription_timeout_s, max_connections=50)
        owned.append(vendor_http)
        app.state.deps = CallDependencies(
            settings=settings, clock=clock, knowledge=knowledge, metrics=metrics, recorder=outbox,
            tools=tools if tools is not None else ToolRunner(outbox), call_control=control,
            thinking_sound=_load_thinking_sound(), observer_factory=observer_factory or NullObserver,
            price_table=load_price_table(), model_name=realtime_model(settings), http=vendor_http,
            coordinator=coordinator,
        )
        if outbox is not None and hasattr(outbox, "pending"):
            metrics.outbox_depth.set_function(lambda: float(outbox.pending))
        # A recorder with a delivery loop (the App server outbox) runs, and is drained, with the app.
        delivery = cast(AppOutbox, outbox) if hasattr(outbox, "run") else None
        try:
            async with asyncio.TaskGroup() as tasks:
                registry.tasks = tasks
                outbox_task = tasks.create_task(delivery.run(), name="app-outbox") if delivery is not None else None
                # A tracer behind the observer factory (Opik) sends from its own task, with the app.
                tracer: Any = getattr(observer_factory, "__self__", None)
                tracer_task = (tasks.create_task(tracer.run(), name="opik-sender")
                               if callable(getattr(tracer, "run", None)) else None)
                heartbeat_task = tasks.create_task(
                    coordinator.run(lambda: list(registry.calls), sweep_hooks(app.state.deps, outbox, adopt_records)),
                    name="state-heartbeat")
                yield
                # Shutdown: calls still live here were not drained (drain timeout): end them now.
                for call in list(registry.calls.values()):
                    call.request_end("server_shutdown")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.close_timeout_s * 2):
                        await registry.idle.wait()
                if delivery is not None and outbox_task is not None:
                    with contextlib.suppress(TimeoutError):
                        await delivery.wait_until_idle(settings.close_timeout_s)
                    outbox_task.cancel()
                if tracer_task is not None and tracer is not None:
                    await tracer.aclose(settings.close_timeout_s * 2)  # bounded: what the ended calls traced
                    tracer_task.cancel()
                heartbeat_task.cancel()
        finally:
            registry.tasks = None
            # After the outbox's last spool write: another voice server adopts what this one could not
            # deliver, at once (not one lease later).
            await coordinator.leave()
            await ai_http.aclose()
            for resource in owned:
                with contextlib.suppress(Exception):
                    await resource.aclose()

    app = FastAPI(title="Switchboard voice server", lifespan=lifespan)
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.settings = settings

    @app.get("/health-check/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health-check/ready")
    async def ready() -> Response:
        if registry.draining:
            return PlainTextResponse("draining", status_code=503)
        if registry.live_count >= settings.max_calls:
            return PlainTextResponse("at capacity", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(WEBHOOK_PATH)
    async def twilio_voice_webhook(request: Request) -> Response:
        form = await request.form()
        params = {key: str(value) for key, value in form.multi_items()}
        base = public_base_url(settings, str(request.url), request.headers)
        if settings.twilio_validate_signatures:
            check = signatures.check(base + WEBHOOK_PATH, params, request.headers)
            if check.refusal is not None:
                metrics.webhooks.labels(outcome=check.refusal).inc()
                log.warning("webhook.rejected", **check.log_fields())
                return PlainTextResponse("invalid signature", status_code=403)
        if registry.draining:
            metrics.webhooks.labels(outcome="draining").inc()
            return PlainTextResponse("draining", status_code=503, headers={"Retry-After": RETRY_AFTER_S})
        if registry.live_count >= settings.max_calls:
            # Admission control: a polite busy message; readiness says not ready meanwhile.
            metrics.webhooks.labels(outcome="at_capacity").inc()
            log.warning("webhook.at_capacity", live_calls=registry.live_count)
            return _twiml(apology_twiml(BUSY_SENTENCE))
        call_sid = params.get("CallSid", "")
        start_call_context(call_sid=call_sid)
        sip_domain = params.get("SipDomain") or None
        to = params.get("To") or None
        from_value = params.get("From", "")
        is_sip = bool(sip_domain) or (to or "").startswith("sip:") or from_value.startswith("sip:")
        knowledge: KnowledgeClient = app.state.knowledge
        try:
            route = await knowledge.resolve_tenant_or_cached(
                sip_domain=sip_domain, to=to, application_sid=params.get("ApplicationSid") or None
            )
        except TenantNotFound:
            metrics.webhooks.labels(outcome="unknown_number").inc()
            log.info("webhook.unknown_number", to=to, sip_domain=sip_domain)
            return _twiml(apology_twiml("Sorry, this number is not set up to take calls yet. Goodbye."))
        except UpstreamError as exc:
            metrics.webhooks.labels(outcome="ai_server_error").inc()
            log.error("webhook.ai_server_failed", detail=str(exc))
            return _twiml(apology_twiml("Sorry, we can't take your call right now. Please try again later. Goodbye."))
        if not route.has_credits:
            metrics.webhooks.labels(outcome="no_credits").inc()
            log.info("webhook.no_credits", tenant=route.bot_profile_key)
            return _twiml(apology_twiml(NO_CREDITS_SENTENCE))
        caller = _caller_number(from_value)
        freshcaller = params.get("FreshcallerCallId") or params.get("SipHeader_X-Freshcaller-Call-Id") or None
        context = CallContext(
            call_sid=call_sid, bot_profile_key=route.bot_profile_key, caller_number=caller, is_sip_call=is_sip,
            freshcaller_call_id=freshcaller, public_base_url=base,
        )
        coordinator: CallCoordinator = app.state.coordinator
        holder = settings.instance_id
        outcome = "answered"
        if call_sid:
            claim = await coordinator.claim(
                call_sid=call_sid, tenant=route.bot_profile_key, caller=caller,
                max_concurrent_calls=route.max_concurrent_calls, credits=None if route.from_cache else route.credits,
            )
            holder = claim.holder
            if claim.outcome == "busy":
                metrics.webhooks.labels(outcome="busy").inc()
                log.info("webhook.busy", tenant=route.bot_profile_key, limit=route.max_concurrent_calls)
                return _twiml(apology_twiml(BUSY_SENTENCE))
            if claim.outcome == "no_credits":
                metrics.webhooks.labels(outcome="no_credits").inc()
                log.info("webhook.no_credits", tenant=route.bot_profile_key, reason="reserved_by_live_calls")
                return _twiml(apology_twiml(NO_CREDITS_SENTENCE))
            if claim.outcome == "duplicate":
                # A retried webhook: the same answer, and no second session (one record, one charge).
                outcome = "duplicate"
            elif call_sid not in registry.calls:
                # Open the model session now, while Twilio sets up the stream.
                registry.start(LiveCall(context, app.state.deps, preopened=True))
        metrics.webhooks.labels(outcome=outcome).inc()
        log.info("webhook.answered", tenant=route.bot_profile_key, caller=mask_phone(caller), sip=is_sip,
                 duplicate=outcome == "duplicate")
        parameters = {
            "bot_profile_key": route.bot_profile_key,
            "is_sip_call": "true" if is_sip else "false",
            "original_caller_number": caller,
        }
        if freshcaller:
            parameters["freshcaller_call_id"] = freshcaller
        url = issue_stream_url(base, url_key, call_sid=call_sid, tenant=route.bot_profile_key, replica=holder,
                               now_s=clock.wall().timestamp(), ttl_s=settings.stream_url_ttl_s)
        return _twiml(stream_twiml(url, parameters))

    gate = StreamGate(settings, signatures, url_key, clock, metrics)

    @app.websocket(STREAM_PATH + "/{replica}/{token}")
    async def twilio_stream(websocket: WebSocket) -> None:
        base = public_base_url(settings, str(websocket.url), websocket.headers)
        verdict = gate.check_upgrade(base, websocket.scope["path"], websocket.headers)
        if verdict.refusal in SIGNATURE_REFUSALS:
            await websocket.close(code=1008)  # before accept: uvicorn answers 403
            return
        grant = verdict.grant
        if registry.draining and (grant is None or grant.call_sid not in registry.calls):
            # A stream whose session was pre-opened here is still served: its call would be lost otherwise.
            log.info("stream.rejected", reason="draining")
            await _deny(websocket, 503)
            return
        if grant is None:
            await websocket.close(code=1008)  # not issued by this deployment, or expired: 403 before accept
            return
        await websocket.accept()
        twilio = TwilioStream(websocket, max_frame_bytes=settings.max_frame_bytes)
        start = await _wait_for_start(twilio, settings.stream_start_timeout_s, metrics)
        if start is None:
            await twilio.close()
            return
        start_call_context(call_sid=start.call_sid, stream_sid=start.stream_sid)
        params = start.custom_parameters
        caller = params.get("original_caller_number", "")
        coordinator: CallCoordinator = app.state.coordinator
        if not gate.start_matches(grant, start) or not await coordinator.attach(
                call_sid=start.call_sid, tenant=grant.tenant, caller=caller):
            if grant.call_sid == start.call_sid:
                gate.refuse("stream_already_attached")
            await twilio.close()
            return
        call = registry.calls.get(start.call_sid)
        if call is not None and call.attach_stream(twilio, start):
            metrics.preopen_sessions.labels(outcome="hit").inc()
            await call.finished.wait()
            return
        # No pre-opened session here (the webhook was served by another server, or it expired): open one.
        # The tenant is the one the signed URL names, never a custom parameter.
        metrics.preopen_sessions.labels(outcome="miss").inc()
        context = CallContext(
            call_sid=start.call_sid, bot_profile_key=grant.tenant, caller_number=caller,
            is_sip_call=params.get("is_sip_call", "false") == "true",
            freshcaller_call_id=params.get("freshcaller_call_id") or None, public_base_url=base,
        )
        call = LiveCall(context, app.state.deps)
        call.attach_stream(twilio, start)
        await registry.run_inline(call)

    # Warm transfer: Twilio's `<Number url>` (whisper) and `<Dial action>` callbacks, on any replica.
    app.include_router(transfer_router(
        settings, signatures, clock, lambda request: public_base_url(settings, str(request.url), request.headers)))

    # The stream skips Starlette's exception middleware, which wraps every send of every frame.
    app.add_middleware(TwilioStreamFastPath, handler=twilio_stream)
    return app


class TwilioStreamFastPath:
    """ASGI middleware: the Media Stream WebSocket goes straight to its handler.

    Starlette's ExceptionMiddleware wraps `send` for WebSockets too; at 50 messages a second each way
    per call that wrapper measured about 7 % of a loaded voice server's CPU. Everything else passes on.
    """

    def __init__(self, app: Any, handler: Any) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and is_stream_path(scope.get("path", "")):
            await self.handler(WebSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)


async def _wait_for_start(twilio: TwilioStream, timeout_s: float, metrics: VoiceMetrics) -> StreamStarted | None:
    try:
        async with asyncio.timeout(timeout_s):
            while (text := await twilio.receive_text()) is not None:
                try:
                    event = parse_twilio_message(text)
                except TwilioProtocolError as exc:
                    metrics.bad_frames.labels(peer="twilio", kind=exc.kind).inc()
                    continue
                if isinstance(event, StreamStarted):
                    return event
                if not isinstance(event, StreamConnected):
                    metrics.bad_frames.labels(peer="twilio", kind="before_start").inc()
    except TimeoutError:
        log.warning("stream.no_start")
    return None


async def _deny(websocket: WebSocket, status_code: int) -> None:
    """Refuse an upgrade with an HTTP status (a load balancer retries 503 elsewhere)."""
    try:
        await websocket.send_denial_response(
            PlainTextResponse("draining", status_code=status_code, headers={"Retry-After": RETRY_AFTER_S})
        )
    except RuntimeError:
        await websocket.close(code=1013)


def _twiml(xml: str) -> Response:
    return Response(content=xml, media_type="text/xml")


def _load_thinking_sound() -> tuple[str, ...]:
    from switchboard.bridge.sounds import thinking_sound_payloads

    return thinking_sound_payloads()

"""Running services production style: uvicorn (uvloop where available), graceful draining on SIGTERM.

The voice server drains: on SIGTERM readiness turns 503 at once, new webhooks and stream upgrades
are refused, live calls run to their natural end, and the process exits when the last call ends or
SWITCHBOARD_DRAIN_TIMEOUT_S passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

import uvicorn

from switchboard.bridge.adapters.direct_ws import WS_PROTOCOL as DIRECT_WS_PROTOCOL
from switchboard.config import AISettings, AppSettings, VoiceSettings, ensure_sqlite_folder, load_settings
from switchboard.logs import configure_logging, get_logger

log = get_logger("switchboard.serving")

# After the drain timeout, how long the remaining calls get for their goodbye before the process exits.
DRAIN_GOODBYE_S = 10.0


def _loop_kind() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def build_app(service: str) -> tuple[Any, Any]:
    """The ASGI app and its settings for one service, settings read once from the environment."""
    from switchboard.tracing import instrument_app

    app, settings = _build_app(service)
    instrument_app(app, service)
    return app, settings


def _build_app(service: str) -> tuple[Any, Any]:
    if service == "voice":
        from switchboard.bridge.app import create_app as create_voice_app
        from switchboard.bridge.wiring import build_voice_dependencies

        voice_settings = load_settings(VoiceSettings)
        _configure(voice_settings, secrets=(voice_settings.openai_api_key, voice_settings.twilio_auth_token,
                                            voice_settings.elevenlabs_api_key, voice_settings.cartesia_api_key,
                                            *voice_settings.webhook_shared_keys.values()))
        return create_voice_app(voice_settings, **build_voice_dependencies(voice_settings)), voice_settings
    if service == "ai":
        from switchboard.knowledge.app import create_app as create_ai_app

        ai_settings = load_settings(AISettings)
        _configure(ai_settings)
        ensure_sqlite_folder(ai_settings.ai_database_url)
        return create_ai_app(ai_settings), ai_settings
    if service == "app":
        from switchboard.tickets.app import create_app as create_tickets_app

        app_settings = load_settings(AppSettings)
        _configure(app_settings)
        ensure_sqlite_folder(app_settings.app_database_url)
        return create_tickets_app(app_settings), app_settings
    raise ValueError(f"unknown service {service!r}")


def _configure(settings: Any, secrets: tuple[str | None, ...] = ()) -> None:
    configure_logging(
        settings.switchboard_log_format, settings.switchboard_log_level, settings.switchboard_environment,
        secrets=(settings.switchboard_service_token, *secrets),
    )


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM drains live calls before the normal shutdown."""

    def __init__(self, config: uvicorn.Config, app: Any, drain_timeout_s: float | None) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        registry = getattr(getattr(self._app, "state", None), "registry", None)
        if sig != signal.SIGTERM or registry is None or self._drain_timeout_s is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        if registry.draining:
            return
        registry.draining = True
        metrics = getattr(self._app.state, "metrics", None)
        if metrics is not None:
            metrics.draining.set(1)
        log.info("drain.started", live_calls=registry.live_count)
        loop = asyncio.get_event_loop()
        self._drain_task = loop.create_task(self._drain(registry), name="drain")

    async def _drain(self, registry: Any) -> None:
        try:
            async with asyncio.timeout(self._drain_timeout_s):
                await registry.idle.wait()
        except TimeoutError:
            # Out of time: every remaining call hears a short goodbye, then ends (bounded).
            log.warning("drain.timeout", live_calls=registry.live_count)
            registry.say_goodbye_all("server_shutdown")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_GOODBYE_S):
                    await registry.idle.wait()
        log.info("drain.finished", live_calls=registry.live_count)
        self.should_exit = True


def _tune_gc() -> None:
    """Keep the cyclic GC off the audio path: freeze what start-up built (modules, app, tables) so full
    collections don't walk it, and collect the young generation less often. Per-frame objects are freed by
    reference counting; the measured effect is on p99 frame latency under load (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def serve(service: str, *, host: str, port: int) -> int:
    if service == "all":
        from switchboard.local_stack import serve_all

        return serve_all(host=host)
    if service == "engine":
        return serve_engine(host=host, port=port)
    app, settings = build_app(service)
    _tune_gc()
    drain_timeout_s = settings.drain_timeout_s if isinstance(settings, VoiceSettings) else None
    config = uvicorn.Config(
        app, host=host, port=port, loop=_loop_kind(), log_config=None, access_log=False,
        timeout_graceful_shutdown=5, ws_max_size=1 << 20, lifespan="on",
        # The App server trusts forwarded headers from SWITCHBOARD_TRUSTED_PROXIES only (in its app).
        proxy_headers=service != "app",
        ws=DIRECT_WS_PROTOCOL,  # the Media Stream's direct text channel (bridge/adapters/direct_ws.py)
    )
    server = DrainingServer(config, app, drain_timeout_s)
    server.run()
    return 0 if not server.started or server.should_exit else 1


def serve_engine(*, host: str, port: int) -> int:
    """The local speech engine (contract §6); it speaks the Realtime protocol on /v1/realtime."""
    configure_logging(os.environ.get("SWITCHBOARD_LOG_FORMAT", "json"), os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    from switchboard.engine.app import run_engine

    loop_factory = None
    if _loop_kind() == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        stop = asyncio.Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            async with asyncio.TaskGroup() as tasks:
                engine_task = tasks.create_task(run_engine(host, port), name="engine")
                await stop.wait()
                engine_task.cancel()

        with contextlib.suppress(asyncio.CancelledError):
            runner.run(main())
    return 0

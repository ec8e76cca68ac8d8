"""Builds the voice server's optional production dependencies from settings (and Opik's own variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from switchboard.bridge.observability import NullObserver, ObserverFactory
from switchboard.clock import Clock, SystemClock
from switchboard.config import VoiceSettings
from switchboard.logs import get_logger
from switchboard.openai_models import warn_about_deprecated_models
from switchboard.pricing import load_price_table

log = get_logger("switchboard.voice")


def build_voice_dependencies(settings: VoiceSettings) -> dict[str, Any]:
    """Keyword arguments for `bridge.app.create_app` beyond settings (production wiring).

    Also warns, once, about configured OpenAI models the pinned SDK marks deprecated.
    """
    warn_about_deprecated_models({
        "OPENAI_REALTIME_MODEL": settings.openai_realtime_model,
        "SWITCHBOARD_TRANSCRIPTION_MODEL": settings.transcription_model,
    })
    return {"observer_factory": build_observer_factory(settings)}


def realtime_model(settings: VoiceSettings) -> tuple[str, str]:
    """(vendor, model) answering the calls, as the price table names them."""
    if settings.uses_local_engine:
        return "local", "engine"
    return "openai", settings.openai_realtime_model


def build_observer_factory(settings: VoiceSettings, *, environ: Mapping[str, str] | None = None,
                           clock: Clock | None = None) -> ObserverFactory:
    """The per-call observer: an Opik trace per call when Opik's variables are set, else a no-op.

    Reads the price table (SWITCHBOARD_PRICE_TABLE or the bundled one) once, here, at start-up.

    Raises:
        SettingsError: SWITCHBOARD_PRICE_TABLE names a missing or malformed file.
    """
    from switchboard.bridge.opik_observer import OpikTracer, is_opik_configured

    env = os.environ if environ is None else environ
    if not is_opik_configured(env):
        return NullObserver
    prices = load_price_table(env)
    vendor, model = realtime_model(settings)
    tracer = OpikTracer.from_environment(env, prices=prices, vendor=vendor, model=model, clock=clock or SystemClock(),
                                         dashboard_base_url=settings.dashboard_base_url)
    if prices.rates(vendor, model) is None:
        log.warning("pricing.model_not_listed", vendor=vendor, model=model, price_table=prices.source)
    log.info("opik.enabled", project=env.get("OPIK_PROJECT_NAME") or "default", price_table_as_of=prices.as_of)
    return tracer.observer

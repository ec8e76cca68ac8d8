"""Builds the voice server's optional production dependencies from settings."""

from __future__ import annotations

from typing import Any

from switchboard.bridge.observability import NullObserver, ObserverFactory
from switchboard.config import VoiceSettings


def build_voice_dependencies(settings: VoiceSettings) -> dict[str, Any]:
    """Keyword arguments for `bridge.app.create_app` beyond settings (production wiring)."""
    return {"observer_factory": build_observer_factory(settings)}


def build_observer_factory(settings: VoiceSettings) -> ObserverFactory:
    """The per-call observer: tracing when configured, else a no-op."""
    return NullObserver

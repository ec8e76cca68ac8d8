"""Tracing set-up for the services (OpenTelemetry). Off unless the standard OTEL_* variables are set."""

from __future__ import annotations

from typing import Any


def instrument_app(app: Any, service: str) -> None:
    """Instrument one service's ASGI app (no-op until tracing is configured)."""
    return None

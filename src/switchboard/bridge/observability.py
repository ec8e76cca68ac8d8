"""The per-call observer port: what tracing (Opik, OpenTelemetry) learns about a call.

The runner calls these at a handful of points per turn, never per audio frame. `NullObserver` is
the default; a tracing observer is built per call by `CallDependencies.observer_factory`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from switchboard.bridge.timeline import TurnTimeline


class CallObserver(Protocol):
    def call_started(self, *, call_sid: str, tenant: str, caller_masked: str, is_sip_call: bool) -> str | None:
        """Open the call's trace; returns its trace id (stored on the App server's conversation)."""
        ...

    def response_done(self, *, response_id: str, status: str, usage: dict[str, Any] | None,
                      started_at: float | None, ended_at: float) -> None: ...

    def tool_finished(self, *, name: str, arguments: str, result: str, duration_ms: float, ok: bool) -> None: ...

    def call_ended(self, *, end_reason: str, duration_s: float, usage: dict[str, Any],
                   timeline: TurnTimeline) -> None: ...


class NullObserver:
    def call_started(self, *, call_sid: str, tenant: str, caller_masked: str, is_sip_call: bool) -> str | None:
        return None

    def response_done(self, *, response_id: str, status: str, usage: dict[str, Any] | None,
                      started_at: float | None, ended_at: float) -> None:
        return None

    def tool_finished(self, *, name: str, arguments: str, result: str, duration_ms: float, ok: bool) -> None:
        return None

    def call_ended(self, *, end_reason: str, duration_s: float, usage: dict[str, Any],
                   timeline: TurnTimeline) -> None:
        return None


ObserverFactory = Callable[[], CallObserver]

"""Helpers for driving the call core with literal times: build calls, make μ-law payloads, pick actions.

Only the public surface of `CallStateMachine` is used: `handle`, `next_deadline` and the read-only properties.
"""

from __future__ import annotations

import base64
from typing import Any, TypeVar

from switchboard.bridge.call.actions import CallAction, PlayToCaller, SendPlaybackMark
from switchboard.bridge.call.events import (
    ModelAudio,
    ModelResponseStarted,
    ModelSessionOpened,
    PlaybackMarked,
    StreamStarted,
)
from switchboard.bridge.call.state_machine import CallSettings, CallStateMachine

A = TypeVar("A")

# Far-away watchdogs unless a test sets them: each test exercises only the timers it names.
QUIET: dict[str, Any] = {
    "inactivity_prompt_s": 600.0, "inactivity_hangup_s": 600.0, "max_call_s": 7200.0, "wrap_up_s": 0.0,
    "model_session_max_s": 1e9,
}
# With QUIET settings and nothing else pending, the only deadline is the max-duration cap.
FAR = 7200.0
# A lead so large that pacing never holds audio back, for tests about something other than pacing.
NO_PACING: dict[str, Any] = {"playback_lead_ms": 3_600_000.0}


def mulaw_b64(ms: int, fill: int = 0xFF) -> str:
    """`ms` of base64 μ-law (8 bytes per ms); `fill` makes payloads distinguishable."""
    return base64.b64encode(bytes([fill]) * (8 * ms)).decode()


def settings(**overrides: Any) -> CallSettings:
    return CallSettings(**{**QUIET, **overrides})


def answered_call(now: float = 0.0, **overrides: Any) -> CallStateMachine:
    """A call whose stream has started and whose model session is open (no greeting unless given)."""
    call = CallStateMachine(settings(**overrides))
    call.handle(StreamStarted(stream_sid="MZ0001", call_sid="CA0001"), now=now)
    call.handle(ModelSessionOpened(), now=now)
    return call


def of_type(actions: list[CallAction], kind: type[A]) -> list[A]:
    return [a for a in actions if isinstance(a, kind)]


def speak(
    call: CallStateMachine,
    *,
    response_id: str,
    item_id: str,
    chunks_ms: list[int],
    now: float,
    start: bool = True,
    request_id: str | None = None,
    fill_from: int = 0,
) -> tuple[list[CallAction], list[SendPlaybackMark]]:
    """Start a response (optionally) and feed one ModelAudio per chunk at `now`; returns actions and marks."""
    actions: list[CallAction] = []
    if start:
        actions += call.handle(ModelResponseStarted(response_id=response_id, request_id=request_id), now=now)
    for index, ms in enumerate(chunks_ms):
        actions += call.handle(
            ModelAudio(response_id=response_id, item_id=item_id, payload=mulaw_b64(ms, fill_from + index)),
            now=now,
        )
    return actions, of_type(actions, SendPlaybackMark)


def echo(call: CallStateMachine, marks: list[SendPlaybackMark], now: float) -> list[CallAction]:
    """Twilio echoes `marks` in order (they have played)."""
    actions: list[CallAction] = []
    for mark in marks:
        actions += call.handle(PlaybackMarked(name=mark.name), now=now)
    return actions


def payloads(actions: list[CallAction]) -> list[str]:
    return [a.payload for a in actions if isinstance(a, PlayToCaller)]

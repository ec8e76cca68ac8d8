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


class PlayingTwilio:
    """Twilio's side of the stream, in the core's time: plays what it is sent at real time, without gaps
    while audio is queued, echoes a mark the moment the audio before it has played, and on `clear` drops
    what is queued and echoes every pending mark at once. Drive it with `run_until`.
    """

    def __init__(self, call: CallStateMachine) -> None:
        self.call = call
        self.queued_ms = 0.0  # stream ms received
        self.played_ms = 0.0  # stream ms played, as of `at`
        self.at = 0.0
        self.pending: list[tuple[float, str]] = []  # (stream ms, mark name)
        self.media: list[tuple[float, float, str]] = []  # (stream start ms, stream end ms, payload)
        self.actions: list[CallAction] = []

    def _advance(self, now: float) -> None:
        if self.played_ms < self.queued_ms:
            self.played_ms = min(self.queued_ms, self.played_ms + (now - self.at) * 1000.0)
        self.at = now

    def perform(self, actions: list[CallAction], now: float) -> list[CallAction]:
        """Apply the core's actions (what reached Twilio at `now`); returns them, for the test to read."""
        from switchboard.bridge.call.actions import ClearCallerPlayback

        self._advance(now)
        self.actions += actions
        for action in actions:
            if isinstance(action, PlayToCaller):
                length_ms = len(base64.b64decode(action.payload)) / 8
                self.media.append((self.queued_ms, self.queued_ms + length_ms, action.payload))
                self.queued_ms += length_ms
            elif isinstance(action, SendPlaybackMark):
                self.pending.append((self.queued_ms, action.name))
            elif isinstance(action, ClearCallerPlayback):
                self.media = [(s, min(e, self.played_ms), p) for s, e, p in self.media if s < self.played_ms]
                self.queued_ms = self.played_ms
                pending, self.pending = self.pending, []
                for _, name in pending:  # echoed although not played: the core must ignore them
                    self.perform(self.call.handle(PlaybackMarked(name=name), now=now), now)
        return actions

    def next_echo_at(self) -> float | None:
        if not self.pending:
            return None
        return self.at + max(0.0, self.pending[0][0] - self.played_ms) / 1000.0

    def run_until(self, until: float) -> None:
        """Fire the core's deadlines and the mark echoes, in time order, up to `until`."""
        from switchboard.bridge.call.events import DeadlineReached

        for _ in range(100_000):
            deadline = self.call.next_deadline()
            echo_at = self.next_echo_at()
            candidates = [t for t in (deadline, echo_at) if t is not None and t <= until]
            if not candidates:
                break
            now = max(min(candidates), self.at)
            self._advance(now)
            if echo_at is not None and now >= echo_at:
                _, name = self.pending.pop(0)
                self.perform(self.call.handle(PlaybackMarked(name=name), now=now), now)
            else:
                self.perform(self.call.handle(DeadlineReached(), now=now), now)
        else:
            raise AssertionError("the core keeps asking for deadlines without time moving on")
        self._advance(until)

    def heard_ms_of(self, payloads: list[str]) -> float:
        """What of these payloads has played so far."""
        wanted = set(payloads)
        return sum(max(0.0, min(e, self.played_ms) - s) for s, e, p in self.media if p in wanted)

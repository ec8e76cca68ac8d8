"""Call phases and the table of allowed transitions. Pure data."""

from __future__ import annotations

import enum


class CallPhase(enum.Enum):
    CONNECTING = "connecting"  # waiting for the model session and/or the caller's stream
    ACTIVE = "active"  # both sides up; conversation in progress
    CLOSING = "closing"  # a goodbye is playing; the call ends when it has been heard
    ENDED = "ended"


ALLOWED_TRANSITIONS: dict[CallPhase, frozenset[CallPhase]] = {
    CallPhase.CONNECTING: frozenset({CallPhase.ACTIVE, CallPhase.CLOSING, CallPhase.ENDED}),
    CallPhase.ACTIVE: frozenset({CallPhase.CLOSING, CallPhase.ENDED}),
    CallPhase.CLOSING: frozenset({CallPhase.ENDED}),
    CallPhase.ENDED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """The core was driven into a phase its table forbids: a bug in the core, not in a peer."""

"""When to try a delivery again, and when to stop. Pure: no I/O, no clock; times and randomness come in.

Standard Webhooks (protocols addendum C.2): any 2xx is success; a 3xx is a failure and is not followed;
410 Gone disables the endpoint; 429/502/503/504 throttle and `Retry-After` is honoured. Other 4xx (and
3xx) are refusals: retried `MAX_REFUSALS - 1` more times, then given up. Everything else (5xx, timeouts,
connection errors) follows `RETRY_DELAYS_S` with ±20 % jitter until the retry window (26 h by default;
the last retry falls on its end) has passed since the event.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

# Delay before retry n (n = 1 is the first retry); the last entry repeats. 5 s * 1.2 jitter = 6 s:
# the first retry always comes within 10 s of the failure.
RETRY_DELAYS_S = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0)
JITTER = 0.2
MAX_REFUSALS = 3
# A Retry-After beyond this is capped: the retry window, not the peer, bounds how long we keep trying.
MAX_RETRY_AFTER_S = 3600.0
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})
_THROTTLING = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt produced. `status_code` None: no HTTP answer (`error` says why)."""

    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None
    # The request may have reached the peer (timeout after sending, dropped answer, 5xx).
    is_ambiguous: bool = False
    # A problem on our side that a retry cannot fix without an operator (missing ${VAR}, refused address).
    is_configuration_error: bool = False
    external_id: str | None = None
    external_url: str | None = None

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Literal["delivered", "retry", "give_up", "disable"]
    next_attempt_at: datetime | None = None
    reason: str | None = None


def retry_delay_s(retry_number: int, rng: random.Random) -> float:
    """Delay before retry `retry_number` (1-based), jittered."""
    base = RETRY_DELAYS_S[min(retry_number, len(RETRY_DELAYS_S)) - 1]
    return base * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is not used by the peers we talk to)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds else None


def is_refusal(status_code: int) -> bool:
    return 300 <= status_code < 400 or (400 <= status_code < 500 and status_code not in _TRANSIENT_4XX | {410})


def decide(
    result: AttemptResult, *, attempts: int, refusals: int, created_at: datetime, now: datetime,
    retry_window_s: float, rng: random.Random,
) -> Decision:
    """The outcome after attempt number `attempts` (1-based), `refusals` counting this one if it was one."""
    code = result.status_code
    if result.is_success:
        return Decision("delivered")
    if code == 410:
        return Decision("disable", reason=result.error or "410 Gone")
    is_refused = result.is_configuration_error or (code is not None and is_refusal(code))
    if is_refused and refusals >= MAX_REFUSALS:
        return Decision("give_up", reason=result.error)
    if code in _THROTTLING and result.retry_after_s is not None:
        delay_s = min(result.retry_after_s, MAX_RETRY_AFTER_S)
    else:
        delay_s = retry_delay_s(attempts, rng)
    deadline = created_at + timedelta(seconds=retry_window_s)
    if now >= deadline:
        return Decision("give_up", reason=f"retry window passed; last error: {result.error}")
    # The last retry lands on the window's end, so a failing endpoint is tried for the whole window.
    return Decision("retry", next_attempt_at=min(now + timedelta(seconds=delay_s), deadline), reason=result.error)

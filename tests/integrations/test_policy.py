"""The retry policy (pure): what follows each kind of answer, and that retries cover at least 24 hours."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from switchboard.tickets.integrations.policy import MAX_REFUSALS, AttemptResult, decide

CREATED = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WINDOW_S = 26 * 3600.0


def after(result: AttemptResult, *, attempts: int = 1, refusals: int = 0, now: datetime = CREATED, seed: int = 0):  # type: ignore[no-untyped-def]
    return decide(result, attempts=attempts, refusals=refusals, created_at=CREATED, now=now,
                  retry_window_s=WINDOW_S, rng=random.Random(seed))


@pytest.mark.parametrize("seed", range(50))
def test_the_first_retry_comes_within_10_s_of_a_failure(seed: int) -> None:
    decision = after(AttemptResult(500, error="500"), seed=seed)

    assert decision.outcome == "retry" and decision.next_attempt_at is not None
    assert 4.0 <= (decision.next_attempt_at - CREATED).total_seconds() <= 6.0


@pytest.mark.parametrize("seed", range(5))
def test_a_failing_endpoint_is_retried_with_growing_delays_for_at_least_24_hours(seed: int) -> None:
    rng = random.Random(seed)
    now, attempts, delays = CREATED, 0, []
    while True:
        attempts += 1
        decision = decide(AttemptResult(None, error="could not connect"), attempts=attempts, refusals=0,
                          created_at=CREATED, now=now, retry_window_s=WINDOW_S, rng=rng)
        if decision.outcome != "retry":
            break
        assert decision.next_attempt_at is not None
        delays.append((decision.next_attempt_at - now).total_seconds())
        now = decision.next_attempt_at

    assert decision.outcome == "give_up" and "retry window passed" in (decision.reason or "")
    assert (now - CREATED) >= timedelta(hours=24)
    assert delays[:6] == sorted(delays[:6])  # exponential at first, then capped at 6 h ± 20 %
    assert max(delays) <= 6 * 3600 * 1.2


def test_2xx_is_success_410_disables_and_retry_after_is_honoured() -> None:
    assert after(AttemptResult(204)).outcome == "delivered"
    assert after(AttemptResult(410, error="410 Gone")).outcome == "disable"
    throttled = after(AttemptResult(429, error="429", retry_after_s=2.0))
    assert throttled.next_attempt_at == CREATED + timedelta(seconds=2)
    unavailable = after(AttemptResult(503, error="503", retry_after_s=120.0), attempts=3)
    assert unavailable.next_attempt_at == CREATED + timedelta(seconds=120)


@pytest.mark.parametrize("result", [
    AttemptResult(400, error="400"), AttemptResult(404, error="404"), AttemptResult(301, error="301 redirect"),
    AttemptResult(None, error="refused: private address", is_configuration_error=True),
])
def test_refusals_are_retried_a_few_times_then_given_up(result: AttemptResult) -> None:
    for refusals in range(1, MAX_REFUSALS):
        assert after(result, attempts=refusals, refusals=refusals).outcome == "retry"
    final = after(result, attempts=MAX_REFUSALS, refusals=MAX_REFUSALS)
    assert final.outcome == "give_up" and final.reason == result.error

"""How a call's duration becomes billed minutes. Pure: no I/O."""

from __future__ import annotations

import math

SECONDS_PER_MINUTE = 60


def billable_minutes(duration_s: float) -> int:
    """Whole minutes started: ceil(duration_s / 60), so 0 s is 0, 0.5 s is 1 and 60 s is 1, 61 s is 2.

    The duration is first rounded to whole milliseconds, so float noise from the voice server's clock
    (60.0000001 s) does not bill an extra minute.

    Raises:
        ValueError: `duration_s` is negative, NaN or infinite.
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be a finite number >= 0, not {duration_s!r}")
    duration_ms = round(duration_s * 1000)
    return -(-duration_ms // (SECONDS_PER_MINUTE * 1000))

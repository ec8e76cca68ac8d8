"""Figures of one call derived from its end record: turn count, median turn latency and cost. Pure.

A turn's latency is the caller's end of speech to the first agent audio played at the caller
(`speech_stopped_to_played_ms`, bridge/timeline.py); a turn without that figure is "not measured"
and left out of the median. Cost prices the call's Realtime usage with the App server's price table.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard.pricing import PriceTable, realtime_tokens

TURN_LATENCY_FIELD = "speech_stopped_to_played_ms"
MODEL_SHARE_FIELD = "speech_stopped_to_model_audio_ms"


@dataclass(frozen=True, slots=True)
class CallFigures:
    turn_count: int
    median_turn_ms: float | None
    cost: float | None


def turn_latency_ms(turn: Mapping[str, Any], field: str = TURN_LATENCY_FIELD) -> float | None:
    value = turn.get(field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def call_figures(
    turns: Sequence[Mapping[str, Any]], usage: Mapping[str, Any], prices: PriceTable | None, model: str
) -> CallFigures:
    measured = [ms for ms in (turn_latency_ms(t) for t in turns) if ms is not None]
    cost = None
    if prices is not None:
        priced = prices.realtime_cost("openai", model, realtime_tokens(usage))
        cost = priced.total if priced is not None else None
    return CallFigures(
        turn_count=len(turns),
        median_turn_ms=round(statistics.median(measured), 1) if measured else None,
        cost=cost,
    )

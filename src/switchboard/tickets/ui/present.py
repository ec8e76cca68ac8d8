"""How figures read on the dashboard: times, offsets, durations, money, latency bars, tool outcomes. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from switchboard.tickets.figures import MODEL_SHARE_FIELD, turn_latency_ms

NOT_MEASURED = "not measured"


def clock_time(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at is not None else "—"


def date_time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at is not None else "—"


def offset(at: datetime | None, started_at: datetime | None) -> str:
    """`+m:ss` from the start of the call."""
    if at is None or started_at is None:
        return ""
    seconds = max(0, int((at - started_at).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"+{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"+{rest // 60}:{rest % 60:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def money(amount: float | None) -> str:
    return "—" if amount is None else f"${amount:,.4f}"


def milliseconds(ms: float | None) -> str:
    return NOT_MEASURED if ms is None else f"{ms:,.0f} ms"


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def tool_failed(result: str | None) -> bool:
    """A tool result that says it failed (`{"ok": false}` or an `error` field), or a timeout."""
    if not result:
        return False
    try:
        parsed = orjson.loads(result)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and (parsed.get("ok") is False or "error" in parsed)


def pretty_json(value: Any) -> str:
    """Indented JSON (orjson: the stdlib's indented encoder is pure Python, and a long call has hundreds)."""
    if isinstance(value, str):
        text = value
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return str(value)


@dataclass(frozen=True, slots=True)
class LatencyBar:
    number: int
    total_ms: float | None
    model_ms: float | None
    total_percent: float
    model_percent: float


def latency_bars(turns: Sequence[Mapping[str, Any]]) -> list[LatencyBar]:
    """One bar per turn, scaled to the slowest measured turn; the model's share inside it."""
    totals = [turn_latency_ms(t) if isinstance(t, Mapping) else None for t in turns]
    slowest = max((t for t in totals if t is not None), default=0.0)
    bars = []
    for number, (turn, total) in enumerate(zip(turns, totals, strict=True), start=1):
        model = turn_latency_ms(turn, MODEL_SHARE_FIELD) if isinstance(turn, Mapping) else None
        if total is not None and model is not None:
            model = min(model, total)
        bars.append(LatencyBar(
            number=number, total_ms=total, model_ms=model,
            total_percent=round(100.0 * total / slowest, 1) if total is not None and slowest > 0 else 0.0,
            model_percent=round(100.0 * model / slowest, 1) if model is not None and slowest > 0 else 0.0,
        ))
    return bars


def usage_rows(usage: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Token counts, flattened one level (`input_token_details.audio_tokens`)."""
    rows: list[tuple[str, str]] = []
    for key, value in (usage or {}).items():
        if isinstance(value, Mapping):
            rows += [(f"{key}.{k}", str(v)) for k, v in value.items() if not isinstance(v, Mapping)]
        else:
            rows.append((key, str(value)))
    return rows


"""The price table (pricing.json, or the file named by SWITCHBOARD_PRICE_TABLE) and what usage costs.

Pure apart from `load_price_table`, which reads the file once at start-up. Prices are per vendor and
model: realtime models per 1M tokens (text/audio, input/cached input/output), TTS per 1K characters,
transcription per audio hour.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from switchboard.config import SettingsError

PRICE_TABLE_ENV = "SWITCHBOARD_PRICE_TABLE"

TOKEN_RATES = ("input_text", "input_cached_text", "input_audio", "input_cached_audio", "output_text", "output_audio")


@dataclass(frozen=True, slots=True)
class RealtimeTokens:
    """Token counts of one model response, cached input split out of the text/audio input counts."""

    input_text: int = 0
    input_cached_text: int = 0
    input_audio: int = 0
    input_cached_audio: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def input_total(self) -> int:
        return self.input_text + self.input_cached_text + self.input_audio + self.input_cached_audio

    @property
    def output_total(self) -> int:
        return self.output_text + self.output_audio


@dataclass(frozen=True, slots=True)
class Cost:
    """What something cost, in `currency`, with the part each rate contributed."""

    total: float
    currency: str
    parts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PriceTable:
    as_of: str
    currency: str
    models: Mapping[str, Mapping[str, Any]]
    source: str = ""

    def rates(self, vendor: str, model: str) -> Mapping[str, Any] | None:
        """The rates of `vendor/model`, or of its longest listed prefix (a dated snapshot of a listed model)."""
        key = f"{vendor}/{model}"
        if key in self.models:
            return self.models[key]
        best: str | None = None
        for listed in self.models:
            if key.startswith(listed + "-") and (best is None or len(listed) > len(best)):
                best = listed
        return self.models[best] if best is not None else None

    def realtime_cost(self, vendor: str, model: str, tokens: RealtimeTokens) -> Cost | None:
        """Cost of one realtime response; None when the model is not in the table."""
        rates = self.rates(vendor, model)
        if rates is None:
            return None
        parts = {
            name: round(getattr(tokens, name) * float(rates.get(name, 0.0)) / 1_000_000, 8) for name in TOKEN_RATES
        }
        return Cost(total=round(sum(parts.values()), 8), currency=self.currency, parts=parts)

    def tts_cost(self, vendor: str, model: str, characters: int) -> Cost | None:
        rates = self.rates(vendor, model)
        if rates is None or "characters" not in rates:
            return None
        total = round(characters * float(rates["characters"]) / 1_000, 8)
        return Cost(total=total, currency=self.currency, parts={"characters": total})

    def transcription_cost(self, vendor: str, model: str, audio_s: float) -> Cost | None:
        rates = self.rates(vendor, model)
        if rates is None or "audio_hours" not in rates:
            return None
        total = round(audio_s / 3600.0 * float(rates["audio_hours"]), 8)
        return Cost(total=total, currency=self.currency, parts={"audio_hours": total})


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def realtime_tokens(usage: Mapping[str, Any] | None) -> RealtimeTokens:
    """Split a Realtime `response.done` usage object into priced token kinds.

    `input_token_details.text_tokens`/`audio_tokens` include the cached tokens, which
    `cached_tokens_details` breaks down (OpenAI Realtime GA usage object). Without that breakdown the
    cached tokens are counted as text first.
    """
    if not usage:
        return RealtimeTokens()
    inputs = usage.get("input_token_details") or {}
    outputs = usage.get("output_token_details") or {}
    text = _int(inputs.get("text_tokens"))
    audio = _int(inputs.get("audio_tokens"))
    cached = _int(inputs.get("cached_tokens"))
    details = inputs.get("cached_tokens_details")
    if isinstance(details, Mapping):
        cached_text = min(_int(details.get("text_tokens")), text)
        cached_audio = min(_int(details.get("audio_tokens")), audio)
    else:
        cached_text = min(cached, text)
        cached_audio = min(cached - cached_text, audio)
    if not inputs:  # no breakdown at all: call every input token text
        text = _int(usage.get("input_tokens"))
    output_text = _int(outputs.get("text_tokens"))
    output_audio = _int(outputs.get("audio_tokens"))
    if not outputs:
        output_text = _int(usage.get("output_tokens"))
    return RealtimeTokens(
        input_text=text - cached_text, input_cached_text=cached_text,
        input_audio=audio - cached_audio, input_cached_audio=cached_audio,
        output_text=output_text, output_audio=output_audio,
    )


def parse_price_table(data: Any, *, source: str) -> PriceTable:
    """Validate a decoded price table. Raises ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the price table must be a JSON object")
    as_of, currency, models = data.get("as_of"), data.get("currency"), data.get("models")
    if not isinstance(as_of, str) or not as_of:
        raise ValueError("the price table needs its date in 'as_of'")
    if not isinstance(currency, str) or not currency:
        raise ValueError("the price table needs a 'currency'")
    if not isinstance(models, dict) or not models:
        raise ValueError("the price table needs 'models': {\"vendor/model\": {rate: price}}")
    for key, rates in models.items():
        if "/" not in key or not isinstance(rates, dict):
            raise ValueError(f"price table entry {key!r} must be named vendor/model and hold an object")
        for name, value in rates.items():
            if name in {"unit", "source", "note"}:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"price table entry {key!r}: {name!r} must be a non-negative number")
    return PriceTable(as_of=as_of, currency=currency, models=models, source=source)


def load_price_table(environ: Mapping[str, str] | None = None) -> PriceTable:
    """The bundled table, or the file SWITCHBOARD_PRICE_TABLE names. Reads a file: call at start-up only.

    Raises:
        SettingsError: the named file is missing or is not a valid price table.
    """
    env = os.environ if environ is None else environ
    override = env.get(PRICE_TABLE_ENV)
    if override:
        try:
            text = Path(override).read_text(encoding="utf-8")
            return parse_price_table(json.loads(text), source=override)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"setting {PRICE_TABLE_ENV} is invalid: {exc}") from None
    text = resources.files("switchboard").joinpath("pricing.json").read_text(encoding="utf-8")
    return parse_price_table(json.loads(text), source="switchboard/pricing.json")

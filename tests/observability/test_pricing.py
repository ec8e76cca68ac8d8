"""The price table: the bundled file, the SWITCHBOARD_PRICE_TABLE override, and what a response costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.config import SettingsError
from switchboard.pricing import load_price_table, realtime_tokens

GA_USAGE = {  # a Realtime GA response.done usage object, cached input broken down
    "total_tokens": 1800, "input_tokens": 1200, "output_tokens": 600,
    "input_token_details": {"text_tokens": 700, "audio_tokens": 500, "image_tokens": 0, "cached_tokens": 400,
                            "cached_tokens_details": {"text_tokens": 300, "audio_tokens": 100, "image_tokens": 0}},
    "output_token_details": {"text_tokens": 100, "audio_tokens": 500},
}


def test_a_gpt_realtime_response_costs_each_kind_of_token_at_its_rate() -> None:
    table = load_price_table({})
    assert table.as_of and table.currency == "USD"
    tokens = realtime_tokens(GA_USAGE)
    assert (tokens.input_text, tokens.input_cached_text, tokens.input_audio, tokens.input_cached_audio,
            tokens.output_text, tokens.output_audio) == (400, 300, 400, 100, 100, 500)
    cost = table.realtime_cost("openai", "gpt-realtime", tokens)
    assert cost is not None
    expected = (400 * 4.0 + 300 * 0.4 + 400 * 32.0 + 100 * 0.4 + 100 * 16.0 + 500 * 64.0) / 1_000_000
    assert cost.total == pytest.approx(expected)
    assert cost.parts["output_audio"] == pytest.approx(500 * 64.0 / 1_000_000)


def test_a_dated_snapshot_takes_its_models_price_and_unknown_models_have_none() -> None:
    table = load_price_table({})
    assert table.rates("openai", "gpt-realtime-mini-2025-10-06") == table.rates("openai", "gpt-realtime-mini")
    assert table.rates("openai", "gpt-realtime-mini") != table.rates("openai", "gpt-realtime")
    assert table.realtime_cost("openai", "gpt-realtimer", realtime_tokens(GA_USAGE)) is None
    assert table.realtime_cost("local", "engine", realtime_tokens(GA_USAGE)).total == 0.0  # type: ignore[union-attr]
    assert table.tts_cost("elevenlabs", "eleven_flash_v2_5", 2000).total == pytest.approx(0.10)  # type: ignore[union-attr]
    assert table.transcription_cost("cartesia", "ink-whisper", 1800).total == pytest.approx(0.065)  # type: ignore[union-attr]


def test_usage_without_a_cached_breakdown_counts_cached_tokens_as_text_first() -> None:
    tokens = realtime_tokens({"input_tokens": 50, "output_tokens": 5,
                              "input_token_details": {"text_tokens": 20, "audio_tokens": 30, "cached_tokens": 25},
                              "output_token_details": {"text_tokens": 5, "audio_tokens": 0}})
    assert (tokens.input_text, tokens.input_cached_text, tokens.input_audio, tokens.input_cached_audio) == (0, 20, 25, 5)
    assert realtime_tokens(None).input_total == 0


def test_the_price_table_can_be_replaced_by_a_file_and_a_bad_one_stops_start_up(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"as_of": "2030-01-01", "currency": "EUR", "models": {
        "openai/gpt-realtime": {"input_text": 1, "input_audio": 2, "output_text": 3, "output_audio": 4}}}))
    table = load_price_table({"SWITCHBOARD_PRICE_TABLE": str(override)})
    assert (table.as_of, table.currency, table.source) == ("2030-01-01", "EUR", str(override))
    cost = table.realtime_cost("openai", "gpt-realtime", realtime_tokens(GA_USAGE))
    assert cost is not None and cost.currency == "EUR"
    # Cached input has no rate in this table, so it is free; uncached text and audio are 400 each.
    assert cost.total == pytest.approx((400 * 1 + 400 * 2 + 100 * 3 + 500 * 4) / 1_000_000)

    override.write_text(json.dumps({"currency": "USD", "models": {}}))
    with pytest.raises(SettingsError, match="SWITCHBOARD_PRICE_TABLE.*as_of"):
        load_price_table({"SWITCHBOARD_PRICE_TABLE": str(override)})
    with pytest.raises(SettingsError, match="SWITCHBOARD_PRICE_TABLE"):
        load_price_table({"SWITCHBOARD_PRICE_TABLE": str(tmp_path / "missing.json")})

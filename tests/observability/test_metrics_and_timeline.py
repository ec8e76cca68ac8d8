"""After a real call through the stack: each service's /metrics, label hygiene, and the per-turn timeline
that `switchboard call` prints from the App server's record."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.fakes.realtime_server import function_call, stream_audio
from switchboard.simulator.command import format_turn_timeline, print_conversation
from tests.bridge.harness import SERVICE_TOKEN
from tests.observability.stack import observed_voice_stack

CALLER = "+15557654321"
PHONE_DIGITS = re.compile(r"\d{7,}")
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(value for sample_name, sample_labels, value in samples
               if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()))


async def _call_with_a_turn_a_tool_and_a_barge_in(stack: Any, caller: Any) -> None:
    await caller.place_call(to="+15551230001", from_=CALLER)
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, 10)
    # A turn: the caller speaks, stops, and hears the answer.
    marks_before = len(caller.marks_echoed)
    await session.speech_started()
    await session.speech_stopped()
    await caller.wait_for(lambda: len(caller.marks_echoed) > marks_before and not caller.has_unplayed_audio, 10)
    # A tool.
    response = await session.start_response(function_call("get_knowledge", {"query": "opening hours"}))
    await response.wait_for_done(timeout_s=5)
    await session.wait_for_event("conversation.item.create", timeout_s=5,
                                 predicate=lambda e: e["item"]["type"] == "function_call_output")
    follow_up = session.active_response
    if follow_up is None:
        await session.wait_for_event("response.create", timeout_s=5)
        follow_up = session.active_response
    if follow_up is not None:
        await follow_up.wait_for_done(timeout_s=5)
    await caller.wait_for(lambda: not caller.has_unplayed_audio, 10)
    # A barge-in on a long answer.
    long_answer = await session.start_response(stream_audio(ms=4000))
    media_before = len(caller.received)
    await caller.wait_for(lambda: len(caller.received) > media_before + 5, 5)
    await session.speech_started()
    await caller.wait_for_message("clear", timeout_s=2)
    await long_answer.wait_for_done(timeout_s=5)
    await caller.hang_up()


async def _wait_until_ended(stack: Any, call_sid: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            conversation = await stack.conversation(call_sid)
            if conversation.get("status") == "ended":
                return conversation
            await asyncio.sleep(0.05)


async def test_metrics_after_a_call_cover_the_fleet_view_and_never_carry_a_number_or_call_sid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with observed_voice_stack(tmp_path, app_over_tcp=True) as (stack, _ai, app_url), \
            stack.caller() as caller:
        await _call_with_a_turn_a_tool_and_a_barge_in(stack, caller)
        await _wait_until_ended(stack, caller.call_sid)
        async with httpx.AsyncClient(timeout=5) as http:
            texts = {
                "voice": (await http.get(stack.voice_url + "/metrics")).text,
                "ai": (await http.get(stack.settings.ai_server_url + "/metrics")).text,
                "app": (await http.get(app_url + "/metrics")).text,
            }
        capsys.readouterr()
        await print_conversation(caller.call_sid, app_url=app_url, token=SERVICE_TOKEN)
        printed = capsys.readouterr().out
        conversation = await stack.conversation(caller.call_sid)

    for service, text in texts.items():
        assert text.strip(), service
        for name, labels, _ in _samples(text):
            for value in labels.values():
                assert not PHONE_DIGITS.search(value), (service, name, labels)
                assert not CALL_SID.search(value), (service, name, labels)
                assert caller.call_sid not in value and "5557654321" not in value
    voice = _samples(texts["voice"])
    assert _value(voice, "switchboard_live_calls") == 0
    assert _value(voice, "switchboard_calls_ended_total", reason="caller_hung_up") == 1
    assert _value(voice, "switchboard_barge_ins_total") >= 1
    assert _value(voice, "switchboard_tool_calls_total", tool="get_knowledge", outcome="ok") == 1
    assert _value(voice, "switchboard_tool_seconds_count", tool="get_knowledge") == 1
    for segment in ("speech_stopped_to_response", "speech_stopped_to_model_audio", "speech_stopped_to_media_sent",
                    "speech_stopped_to_played"):
        assert _value(voice, "switchboard_turn_segment_seconds_count", segment=segment) >= 1, segment
    assert _value(voice, "switchboard_barge_in_reaction_seconds_count") >= 1
    ai = _samples(texts["ai"])
    assert _value(ai, "switchboard_ai_knowledge_searches_total") >= 1
    app = _samples(texts["app"])
    assert _value(app, "switchboard_app_conversations_ended_total") == 1

    # `switchboard call` prints the voice server's timeline from the App server's record.
    turns = conversation["turns"]
    assert turns and all(turn["speech_stopped_to_media_sent_ms"] is not None for turn in turns)
    assert "per-turn latency (voice server, ms after the caller stopped speaking):" in printed
    rows = [line.split() for line in printed.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == len(turns)
    first = turns[0]
    assert rows[0][0] == "1"
    assert rows[0][3] == f"{first['speech_stopped_to_media_sent_ms']:.0f}"
    assert rows[0][4] == f"{first['speech_stopped_to_played_ms']:.0f}"


def test_the_timeline_table_marks_points_a_turn_never_reached() -> None:
    lines = format_turn_timeline([
        {"speech_stopped_to_response_ms": 120.4, "speech_stopped_to_model_audio_ms": 180.0,
         "speech_stopped_to_media_sent_ms": 181.2, "speech_stopped_to_played_ms": 395.9},
        {"speech_stopped_to_response_ms": 90.0, "speech_stopped_to_model_audio_ms": 150.0,
         "speech_stopped_to_media_sent_ms": 151.0, "speech_stopped_to_played_ms": None},
    ])
    assert lines[1].split() == ["turn", "response", "model", "audio", "media", "sent", "played"]
    assert lines[2].split() == ["1", "120", "180", "181", "396"]
    assert lines[3].split() == ["2", "90", "150", "151", "-"]
    assert format_turn_timeline([]) == ["per-turn latency (voice server): no complete turn was recorded"]

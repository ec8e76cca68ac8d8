"""Call fidelity on the wire: what the caller heard is what the model and the record are told.

The caller plays the agent's audio at real time and echoes each mark the moment it is due (as Twilio
does); the fake model generates answers in a burst, as the live service does. Each test names the bug it
would have caught.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from switchboard.fakes.realtime_server import (
    FakeRealtimeServer,
    FakeRealtimeSession,
    ResponseScript,
    stream_audio,
)
from switchboard.simulator.twilio_caller import TwilioCaller
from tests.bridge.harness import API_KEY, voice_stack, wait_until

TOLERANCE_MS = 60  # contract §5: audio_end_ms is what the caller actually heard
WORDS_48 = " ".join(f"word{i}" for i in range(48))


def burst_model(script: ResponseScript) -> FakeRealtimeServer:
    """A model that produces every answer at once, in 20 ms deltas."""
    return FakeRealtimeServer(api_key=API_KEY, audio_ms_per_delta=20, delta_interval_s=0.0, default_script=script)


def item_deltas(session: FakeRealtimeSession, item_id: str) -> list[str]:
    return [e["delta"] for e in session.sent if e["type"] == "response.output_audio.delta" and e["item_id"] == item_id]


def audio_items(session: FakeRealtimeSession, response_index: int) -> list[str]:
    return [i for i in session.responses[response_index].item_ids if item_deltas(session, i)]


def ms_of(deltas: list[str]) -> float:
    return sum(len(base64.b64decode(d)) for d in deltas) / 8


async def answered(stack: Any, caller: TwilioCaller) -> FakeRealtimeSession:
    await caller.place_call(to="+15551230001", from_="+15557654321")
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_event("response.create", timeout_s=5)
    return session


async def barge_in_after(caller: TwilioCaller, session: FakeRealtimeSession, deltas: list[str],
                         heard_ms: float) -> tuple[dict[str, Any], float]:
    """Let the caller hear `heard_ms` of these deltas, barge in; returns the truncate and what was heard."""
    truncates_before = len(session.events_of("conversation.item.truncate"))
    clears_before = caller.clears
    await caller.wait_for(lambda: caller.heard_ms_of(deltas) >= heard_ms, timeout_s=15)
    await session.speech_started()
    await caller.wait_for(lambda: caller.clears > clears_before, timeout_s=2)
    await wait_until(lambda: len(session.events_of("conversation.item.truncate")) > truncates_before, timeout_s=2)
    truncate = session.events_of("conversation.item.truncate")[truncates_before]
    return truncate, caller.heard_ms_of(deltas)


async def assistant_text(stack: Any, call_sid: str, item_id: str, changed_from: str | None = None) -> str:
    """The App server's record of an assistant item, once there (and different from `changed_from`)."""
    async with asyncio.timeout(5):
        while True:
            # The record opens once the stream is here (a pre-opened call records nothing before): may be absent.
            listed = (await stack.app_server.get("/api/conversations", params={"call_sid": call_sid})).json()
            messages = [m for c in listed["conversations"] for m in c["messages"]]
            texts = [m["text"] for m in messages if m["message_id"] == f"{call_sid}:assistant:{item_id}"]
            if texts and texts[0] != changed_from:
                return str(texts[0])
            await asyncio.sleep(0.025)


async def test_barge_ins_at_odd_offsets_between_100_ms_marks_truncate_to_what_was_heard(tmp_path: Path) -> None:
    # The bug: the truncate sat at the last echoed mark, up to a whole mark interval (plus a 150 ms margin)
    # behind what the caller had heard.
    async with voice_stack(tmp_path, model=burst_model(stream_audio(ms=3000, transcript=WORDS_48)),
                           SWITCHBOARD_MARK_INTERVAL_MS=100) as stack, stack.caller() as caller:
        session = await answered(stack, caller)
        for index, target_ms in enumerate([730, 1170, 1450, 1890]):
            await wait_until(lambda i=index: len(session.responses) > i and audio_items(session, i), timeout_s=5)
            [item_id] = audio_items(session, index)
            deltas = item_deltas(session, item_id)
            truncate, heard_ms = await barge_in_after(caller, session, deltas, target_ms)
            assert truncate["item_id"] == item_id
            assert abs(truncate["audio_end_ms"] - heard_ms) <= TOLERANCE_MS, (target_ms, truncate, heard_ms)
            assert truncate["audio_end_ms"] <= ms_of(item_deltas(session, item_id))
            await session.speech_stopped()  # the caller's turn ends; the model answers again
        assert session.errors_sent == [] and session.protocol_errors == []
        assert caller.protocol_errors == []


@pytest.mark.parametrize("lead", ["paced", "unpaced"])
async def test_a_burst_answer_interrupted_at_30_percent_is_recorded_at_30_percent(tmp_path: Path, lead: str) -> None:
    # The bug: the cut was measured against audio forwarded so far (paced, ~3.3 s), not the answer's 10 s,
    # so 41-43 of its 48 words were recorded after 3 s heard.
    overrides = {"SWITCHBOARD_PLAYBACK_LEAD_MS": 3_600_000} if lead == "unpaced" else {}
    async with voice_stack(tmp_path, model=burst_model(stream_audio(ms=10_000, transcript=WORDS_48)),
                           **overrides) as stack, stack.caller() as caller:
        session = await answered(stack, caller)
        await wait_until(lambda: audio_items(session, 0), timeout_s=5)
        [item_id] = audio_items(session, 0)
        await session.responses[0].wait_for_done(timeout_s=5)
        deltas = item_deltas(session, item_id)
        assert ms_of(deltas) == 10_000
        full = await assistant_text(stack, caller.call_sid, item_id)
        assert full == WORDS_48

        truncate, heard_ms = await barge_in_after(caller, session, deltas, 3000)

        assert abs(truncate["audio_end_ms"] - heard_ms) <= TOLERANCE_MS
        cut = await assistant_text(stack, caller.call_sid, item_id, changed_from=full)
        recorded_fraction = len(cut.rstrip("…").split()) / 48
        assert abs(recorded_fraction - heard_ms / 10_000) <= 0.10, (cut, heard_ms)
        assert session.errors_sent == []


async def test_a_two_item_response_interrupted_in_its_second_item_leaves_the_first_alone(tmp_path: Path) -> None:
    # The bug: the preamble, heard whole, was truncated too (which drops its transcript at the model).
    script = stream_audio(ms=1500, transcript="Let me check that for you.") + stream_audio(
        ms=4000, transcript="one two three four five six seven eight")
    async with voice_stack(tmp_path, model=burst_model(script)) as stack, stack.caller() as caller:
        session = await answered(stack, caller)
        await wait_until(lambda: len(audio_items(session, 0)) == 2, timeout_s=5)
        preamble, answer = audio_items(session, 0)

        truncate, heard_ms = await barge_in_after(caller, session, item_deltas(session, answer), 1000)

        assert caller.heard_ms_of(item_deltas(session, preamble)) == 1500
        assert truncate["item_id"] == answer
        assert abs(truncate["audio_end_ms"] - heard_ms) <= TOLERANCE_MS
        await session.speech_stopped()
        await session.wait_for_sent("response.done", timeout_s=5, after_index=len(session.sent))
        touched = [e for e in session.received if e["type"] in ("conversation.item.truncate",
                                                                   "conversation.item.delete")]
        assert [(e["type"], e["item_id"]) for e in touched] == [("conversation.item.truncate", answer)]
        assert await assistant_text(stack, caller.call_sid, preamble) == "Let me check that for you."
        cut = await assistant_text(stack, caller.call_sid, answer, changed_from="one two three four five six seven eight")
        assert cut == "one two…"
        assert session.errors_sent == []


@pytest.mark.parametrize("how", ["drop", "recycle"])
async def test_a_barge_in_after_a_new_model_session_touches_only_what_it_was_given(tmp_path: Path, how: str) -> None:
    # The bug: the truncate for the old session's item went to the new session, which answered with an error;
    # and the new session kept the whole replayed answer although the caller cut it short.
    overrides = {"SWITCHBOARD_MODEL_SESSION_MAX_S": 1.5} if how == "recycle" else {}
    async with voice_stack(tmp_path, model=burst_model(stream_audio(ms=6000, transcript=WORDS_48)),
                           **overrides) as stack, stack.caller() as caller:
        first = await answered(stack, caller)
        await wait_until(lambda: audio_items(first, 0), timeout_s=5)
        [item_id] = audio_items(first, 0)
        deltas = item_deltas(first, item_id)
        await caller.wait_for(lambda: caller.heard_ms_of(deltas) >= 1000, timeout_s=5)
        if how == "drop":
            await first.drop()
        second = await stack.model.wait_for_session(timeout_s=5)
        await second.wait_for_event("session.update", timeout_s=5)
        assert caller.has_unplayed_audio  # the old answer is still playing at the caller

        clears_before = caller.clears
        await second.speech_started()
        await caller.wait_for(lambda: caller.clears > clears_before, timeout_s=2)
        await second.speech_stopped()
        await second.wait_for_sent("response.done", timeout_s=5)

        # Only items the new session was given are touched: our replay of the old answer, replaced by the
        # part the caller heard.
        given = {e["item"].get("id") for e in second.events_of("conversation.item.create")}
        about_items = [e for e in second.received if e["type"] in (
            "conversation.item.truncate", "conversation.item.delete", "conversation.item.retrieve")]
        assert [e["type"] for e in about_items] == ["conversation.item.delete"]
        assert about_items[0]["item_id"] in given and item_id not in given
        assert second.errors_sent == [] and second.protocol_errors == []
        heard_ms = caller.heard_ms_of(deltas)
        cut = await assistant_text(stack, caller.call_sid, item_id, changed_from=WORDS_48)
        assert abs(len(cut.rstrip("…").split()) / 48 - heard_ms / 6000) <= 0.10, (cut, heard_ms)
        [replacement] = [e["item"] for e in second.events_of("conversation.item.create")
                         if e["item"].get("role") == "assistant" and "id" not in e["item"]]
        assert replacement["content"][0]["text"] == cut

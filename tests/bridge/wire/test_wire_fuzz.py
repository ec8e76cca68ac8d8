"""Fuzz the parsers: any frame either parses or raises the parser's own ProtocolError, nothing else.

The same property for `parse_twilio_message` fails today; it is in tests/bridge/call/test_found_bugs.py.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.bridge.wire.openai_realtime import RealtimeProtocolError, parse_realtime_event

FUZZ = settings(max_examples=200, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def shaped(keys: list[str]) -> st.SearchStrategy[object]:
    """Either any JSON value, or an object with (some of) the expected keys holding any JSON value."""
    return json_values | st.fixed_dictionaries({}, optional={key: json_values for key in keys})


REALTIME_TYPES = [
    "response.output_audio.delta", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed", "response.created", "response.done", "response.output_audio_transcript.done",
    "response.output_text.done", "response.function_call_arguments.done",
    "conversation.item.input_audio_transcription.completed", "error", "session.created", "session.updated",
    "rate_limits.updated",
]
realtime_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(REALTIME_TYPES)},
    optional={
        key: json_values
        for key in ["response_id", "item_id", "delta", "transcript", "text", "call_id", "name", "arguments",
                    "audio_start_ms", "previous_item_id", "event_id"]
    }
    | {"response": shaped(["id", "status", "usage", "metadata"]), "error": shaped(["code", "message", "type",
                                                                                   "event_id"])},
)


def frames(messages: st.SearchStrategy[dict]) -> st.SearchStrategy[str | bytes]:
    """Mostly near-miss messages (text or bytes), sometimes any text, bytes or JSON at all."""
    as_text = messages.map(json.dumps)
    return st.one_of(
        as_text, as_text.map(str.encode), as_text, as_text, st.text(), st.binary(), json_values.map(json.dumps)
    )


@FUZZ
@given(frames(realtime_messages))
def test_parse_realtime_event_returns_or_raises_its_protocol_error(frame):
    with contextlib.suppress(RealtimeProtocolError):
        parse_realtime_event(frame)


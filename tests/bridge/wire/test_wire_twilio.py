"""Twilio Media Streams wire format: golden messages from Twilio's docs (protocols.md §2.3-2.4), both ways."""

from __future__ import annotations

import base64
import json

import pytest

from switchboard.bridge.call.actions import ClearCallerPlayback, PlayToCaller, SendPlaybackMark
from switchboard.bridge.call.events import (
    CallerAudio,
    CallerHungUp,
    CallerPressedKey,
    PlaybackMarked,
    StreamStarted,
)
from switchboard.bridge.wire.twilio_media import (
    StreamConnected,
    TwilioProtocolError,
    encode_clear,
    encode_mark,
    encode_media,
    parse_twilio_message,
)

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA5c8a1e5c5f0d4b8e9a0b7c6d5e4f3a2b"
ACCOUNT_SID = "AC25e16e9a716a4a1786a7c83f58e30482"
FRAME = base64.b64encode(bytes(range(96, 256))).decode()  # one 20 ms frame: 160 μ-law bytes

GOLDEN_FROM_TWILIO = [
    ({"event": "connected", "protocol": "Call", "version": "1.0.0"}, StreamConnected()),
    (
        {
            "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
            "start": {
                "accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": CALL_SID, "tracks": ["inbound"],
                "customParameters": {"session": "abc", "tenant": "acme"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        },
        StreamStarted(stream_sid=STREAM_SID, call_sid=CALL_SID, custom_parameters={"session": "abc", "tenant": "acme"}),
    ),
    (
        {
            "event": "media", "sequenceNumber": "4", "streamSid": STREAM_SID,
            "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": FRAME},
        },
        CallerAudio(FRAME),
    ),
    (
        {"event": "dtmf", "sequenceNumber": "5", "streamSid": STREAM_SID,
         "dtmf": {"track": "inbound_track", "digit": "1"}},
        CallerPressedKey("1", 5),
    ),
    (
        {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "my label"}},
        PlaybackMarked("my label"),
    ),
    (
        {"event": "stop", "sequenceNumber": "5", "streamSid": STREAM_SID,
         "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}},
        CallerHungUp(),
    ),
]


@pytest.mark.parametrize(("message", "event"), GOLDEN_FROM_TWILIO, ids=[m["event"] for m, _ in GOLDEN_FROM_TWILIO])
def test_parses_twilio_messages(message, event):
    assert parse_twilio_message(json.dumps(message)) == event
    assert parse_twilio_message(json.dumps(message).encode()) == event


def test_start_without_custom_parameters():
    message = {"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
               "start": {"accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": CALL_SID}}
    assert parse_twilio_message(json.dumps(message)) == StreamStarted(stream_sid=STREAM_SID, call_sid=CALL_SID)


def test_encodes_media():
    assert json.loads(encode_media(STREAM_SID, PlayToCaller(FRAME))) == {
        "event": "media", "streamSid": STREAM_SID, "media": {"payload": FRAME},
    }


def test_encodes_mark():
    mark = SendPlaybackMark(name="m17", item_id="item_1", audio_end_ms=1600)
    assert json.loads(encode_mark(STREAM_SID, mark)) == {
        "event": "mark", "streamSid": STREAM_SID, "mark": {"name": "m17"},
    }


def test_encodes_clear():
    assert json.loads(encode_clear(STREAM_SID, ClearCallerPlayback())) == {"event": "clear", "streamSid": STREAM_SID}


def test_an_echoed_mark_parses_back_to_the_name_we_sent():
    sent = json.loads(encode_mark(STREAM_SID, SendPlaybackMark(name="m3", item_id=None, audio_end_ms=0)))
    echoed = {**sent, "sequenceNumber": "9"}
    assert parse_twilio_message(json.dumps(echoed)) == PlaybackMarked("m3")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('"media"', "not_an_object"),
        ('{"event": "bogus"}', "unknown_event"),
        ("{}", "unknown_event"),
        ('{"event": "media", "media": {}}', "missing_fields_media"),
        ('{"event": "media"}', "missing_fields_media"),
        ('{"event": "media", "media": {"payload": "abc"}}', "bad_base64"),
        ('{"event": "media", "media": {"payload": "ab$d"}}', "bad_base64"),
        ('{"event": "media", "media": {"payload": 42}}', "bad_base64"),
        ('{"event": "mark", "mark": {"name": 7}}', "bad_mark"),
        ('{"event": "mark", "mark": {}}', "missing_fields_mark"),
        ('{"event": "start", "start": {"streamSid": "MZ1"}}', "missing_fields_start"),
        ('{"event": "start", "start": {"callSid": "CA1", "customParameters": [1]}}', "bad_start"),
        ('{"event": "dtmf", "dtmf": {}}', "missing_fields_dtmf"),
        ('{"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "12"}}', "bad_dtmf"),
        ('{"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "x"}}', "bad_dtmf"),
        ('{"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": 5}}', "bad_dtmf"),
        ('{"event": "dtmf", "sequenceNumber": "five", "dtmf": {"track": "inbound_track", "digit": "5"}}', "bad_dtmf"),
    ],
)
def test_rejects_malformed_messages_with_a_fixed_kind(raw, kind):
    with pytest.raises(TwilioProtocolError) as caught:
        parse_twilio_message(raw)
    assert caught.value.kind == kind

"""Twilio Media Streams messages <-> call events and actions. Pure: no I/O.

Twilio sends `connected`, `start`, `media`, `mark`, `dtmf`, `stop` (all ids and counters are
strings); we send `media`, `mark` and `clear` (protocols.md §2.3-2.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from switchboard.bridge.call.actions import ClearCallerPlayback, PlayToCaller, SendPlaybackMark
from switchboard.bridge.call.events import (
    CallerAudio,
    CallerHungUp,
    CallerPressedKey,
    PlaybackMarked,
    StreamStarted,
)

DTMF_KEYS = frozenset("0123456789*#ABCD")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class TwilioProtocolError(ValueError):
    """The peer (Twilio, or something pretending to be it) sent a message we cannot use.

    `kind` is a short, fixed label for counting and logging (never the message content).
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """Twilio's first message; carries nothing the call needs."""


TwilioEvent = StreamConnected | StreamStarted | CallerAudio | PlaybackMarked | CallerPressedKey | CallerHungUp


def parse_twilio_message(message: str | bytes) -> TwilioEvent:
    """Parse one text frame from Twilio.

    Raises:
        TwilioProtocolError: malformed JSON, an unknown event, or a message missing its fields.
    """
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise TwilioProtocolError("malformed_json") from None
    if not isinstance(data, dict):
        raise TwilioProtocolError("not_an_object")
    event = data.get("event")
    try:
        if event == "media":
            payload = data["media"]["payload"]
            if not isinstance(payload, str) or len(payload) % 4 or not _BASE64.fullmatch(payload):
                raise TwilioProtocolError("bad_base64")
            return CallerAudio(payload)
        if event == "mark":
            name = data["mark"]["name"]
            if not isinstance(name, str):
                raise TwilioProtocolError("bad_mark")
            return PlaybackMarked(name)
        if event == "start":
            start: dict[str, Any] = data["start"]
            if not isinstance(start, dict):
                raise TwilioProtocolError("bad_start")
            params = start.get("customParameters") or {}
            if not isinstance(params, dict):
                raise TwilioProtocolError("bad_start")
            return StreamStarted(
                stream_sid=str(start.get("streamSid") or data["streamSid"]),
                call_sid=str(start["callSid"]),
                custom_parameters={str(k): str(v) for k, v in params.items()},
            )
        if event == "dtmf":
            digit = data["dtmf"]["digit"]
            # One key per message (protocols-addendum A.1); anything else is not a key we know.
            if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_KEYS:
                raise TwilioProtocolError("bad_dtmf")
            # A JSON string ("5") per the protocol; compared as an int (protocols-addendum A.1).
            sequence = data.get("sequenceNumber")
            if sequence is None:
                return CallerPressedKey(digit)
            if not isinstance(sequence, str | int) or isinstance(sequence, bool) or not str(sequence).isdigit():
                raise TwilioProtocolError("bad_dtmf")
            return CallerPressedKey(digit, int(sequence))
        if event == "stop":
            return CallerHungUp()
        if event == "connected":
            return StreamConnected()
    except (KeyError, TypeError, AttributeError):
        raise TwilioProtocolError(f"missing_fields_{event}") from None
    raise TwilioProtocolError("unknown_event")


def encode_media(stream_sid: str, action: PlayToCaller) -> str:
    return orjson.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": action.payload}}).decode()


def encode_mark(stream_sid: str, action: SendPlaybackMark) -> str:
    return orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": action.name}}).decode()


def encode_clear(stream_sid: str, action: ClearCallerPlayback | None = None) -> str:
    return orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()

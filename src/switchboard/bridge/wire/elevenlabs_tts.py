"""ElevenLabs multi-context TTS WebSocket (`multi-stream-input`) messages, both ways. Pure: no I/O.

Client messages use `context_id`, server messages `contextId` (protocols.md §3.2); audio comes back as
base64 μ-law (`output_format=ulaw_8000`) and is passed on untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import orjson

CHUNK_LENGTH_SCHEDULE = (120, 160, 250, 290)
"""Characters buffered before each successive generation (ElevenLabs' default schedule)."""
INACTIVITY_TIMEOUT_S = 180
"""The longest ElevenLabs allows; keep-alives between turns reset it."""
OUTPUT_FORMAT = "ulaw_8000"

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_SCHEMES = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}


class TtsProtocolError(ValueError):
    """ElevenLabs (or something pretending to be it) sent a frame we cannot use.

    `kind` is a short, fixed label for counting and logging (never the frame content).
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class TtsAlignment:
    """Which characters a chunk speaks and when, in ms from the start of that chunk."""

    chars: tuple[str, ...]
    start_ms: tuple[int, ...]
    duration_ms: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TtsAudio:
    """One chunk of synthesized speech: `payload` is base64 μ-law 8 kHz, exactly as received."""

    context_id: str
    payload: str
    alignment: TtsAlignment | None


@dataclass(frozen=True, slots=True)
class TtsContextFinal:
    """ElevenLabs has sent all audio for a flushed context."""

    context_id: str


@dataclass(frozen=True, slots=True)
class TtsError:
    """ElevenLabs reported an error (auth, quota, too many contexts...); it closes the socket next."""

    message: str


TtsEvent = TtsAudio | TtsContextFinal | TtsError


def tts_url(base_url: str, voice_id: str, model_id: str) -> str:
    """The multi-context WebSocket URL under `base_url` (`https://api.elevenlabs.io` -> `wss://...`).

    Raises:
        ValueError: `base_url` is not an http(s) or ws(s) URL.
    """
    parts = urlsplit(base_url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError("base_url must be an http(s) or ws(s) URL")
    path = f"{parts.path.rstrip('/')}/v1/text-to-speech/{quote(voice_id, safe='')}/multi-stream-input"
    query = urlencode({
        "model_id": model_id,
        "output_format": OUTPUT_FORMAT,
        "inactivity_timeout": INACTIVITY_TIMEOUT_S,
        "sync_alignment": "true",
    })
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def encode_init_context(context_id: str, *, speed: float = 1.0) -> str:
    """The first message of a context: a single space, the voice settings and the chunk schedule.

    Voice settings are sent once per context (sources disagree on whether they may change later).

    Raises:
        ValueError: `speed` outside ElevenLabs' 0.7-1.2.
    """
    if not 0.7 <= speed <= 1.2:
        raise ValueError("speed must be within 0.7-1.2")
    return _dumps({
        "text": " ",
        "context_id": context_id,
        "voice_settings": {
            "stability": 0.5,
            "similarity_boost": 0.75,
            "style": 0.0,
            "use_speaker_boost": True,
            "speed": speed,
        },
        "generation_config": {"chunk_length_schedule": list(CHUNK_LENGTH_SCHEDULE)},
    })


def encode_text(context_id: str, text: str) -> str:
    """Text for a context, ending with exactly one space as ElevenLabs asks.

    Because a space is added, pass whole words (see `take_complete_words`), not raw token deltas.

    Raises:
        ValueError: `text` is empty or only whitespace (that would be a keep-alive or a re-initialisation).
    """
    if not text.strip():
        raise ValueError("text must contain something to speak")
    return _dumps({"text": text.rstrip(" ") + " ", "context_id": context_id})


def encode_flush(context_id: str) -> str:
    """Generate everything buffered in the context now; send at the end of each response."""
    return _dumps({"context_id": context_id, "flush": True})


def encode_close_context(context_id: str) -> str:
    """Stop the context (barge-in). A context already flushing may still finish: drop its late audio."""
    return _dumps({"context_id": context_id, "close_context": True})


def encode_keep_alive(context_id: str) -> str:
    """Reset the context's inactivity timer (empty text is otherwise ignored)."""
    return _dumps({"text": "", "context_id": context_id})


def encode_close_socket() -> str:
    """Close every context and then the socket; contexts already flushing finish first."""
    return _dumps({"close_socket": True})


def take_complete_words(pending: str) -> tuple[str, str]:
    """Split streamed text at its last whitespace: `(ready, rest)`, with `ready` ending in whole words.

    `ready` is "" until a word is complete. Feed `rest` + the next delta back in; at the end of a
    response send whatever remains.
    """
    cut = max(pending.rfind(" "), pending.rfind("\n"))
    if cut < 0:
        return "", pending
    ready, rest = pending[:cut], pending[cut + 1 :]
    return (ready if ready.strip() else ""), rest


def parse_tts_message(raw: str | bytes) -> TtsEvent | None:
    """Parse one frame from ElevenLabs; None for frames carrying nothing (empty or null audio).

    Alignment comes from `alignment`, or from `normalizedAlignment` when that is all there is.

    Raises:
        TtsProtocolError: malformed JSON, bad base64, a malformed alignment, or no context id.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TtsProtocolError("malformed_json") from None
    if not isinstance(data, dict):
        raise TtsProtocolError("not_an_object")
    if "error" in data or "message" in data:
        message = data.get("message") or data.get("error") or "unknown error"
        return TtsError(str(message))
    audio = data.get("audio")
    if data.get("isFinal") is True and not audio:
        return TtsContextFinal(_context_id(data))
    if audio is None or audio == "":
        return None
    if not isinstance(audio, str) or len(audio) % 4 or not _BASE64.fullmatch(audio):
        raise TtsProtocolError("bad_base64")
    alignment = data.get("alignment")
    if alignment is None:
        alignment = data.get("normalizedAlignment")
    return TtsAudio(_context_id(data), audio, None if alignment is None else _parse_alignment(alignment))


def _context_id(data: dict[str, Any]) -> str:
    # The spec says `contextId`; some live responses have been seen with `context_id` too.
    context_id = data.get("contextId", data.get("context_id"))
    if not isinstance(context_id, str) or not context_id:
        raise TtsProtocolError("missing_context_id")
    return context_id


def _parse_alignment(alignment: object) -> TtsAlignment:
    if not isinstance(alignment, dict):
        raise TtsProtocolError("bad_alignment")
    chars, starts, durations = (alignment.get(key) for key in ("chars", "charStartTimesMs", "charDurationsMs"))
    if not (isinstance(chars, list) and isinstance(starts, list) and isinstance(durations, list)):
        raise TtsProtocolError("bad_alignment")
    if not len(chars) == len(starts) == len(durations):
        raise TtsProtocolError("bad_alignment")
    if not all(isinstance(char, str) for char in chars):
        raise TtsProtocolError("bad_alignment")
    return TtsAlignment(tuple(chars), _milliseconds(starts), _milliseconds(durations))


def _milliseconds(values: list[Any]) -> tuple[int, ...]:
    if not all(isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 for value in values):
        raise TtsProtocolError("bad_alignment")
    return tuple(round(value) for value in values)


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()

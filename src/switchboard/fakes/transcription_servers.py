"""Fake batch speech-to-text APIs on 127.0.0.1: Cartesia `POST /stt` and ElevenLabs Scribe `POST /v1/speech-to-text`.

Each checks auth, query and multipart fields the way protocols.md §4.1 and §3.3 describe, records every
request, and answers a deterministic transcript (by default "caller said <ms> ms of audio") after a
configurable delay, or a configurable error status. Each runs a small FastAPI app under uvicorn inside
`async with`; nothing outlives the block.

    async with FakeCartesia(api_key="sk_car_test") as cartesia:
        ...  # point the code under test at cartesia.base_url
        request = await cartesia.wait_for_request()
        assert request.audio == mulaw
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from switchboard.fakes.loopback import LoopbackServer

__all__ = ["FakeCartesia", "FakeScribe", "SttRequest"]

JsonDict: TypeAlias = dict[str, Any]
Transcript: TypeAlias = Callable[[bytes], str]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True, slots=True)
class SttRequest:
    """One request a fake received, and what it answered."""

    path: str
    headers: dict[str, str]
    query: dict[str, str]
    form: dict[str, str]
    """Multipart fields other than the file."""
    audio: bytes | None
    """The uploaded `file`, byte for byte."""
    status_code: int
    body: JsonDict


class _FakeSttServer(ABC):
    """Lifecycle, records, delay and failure controls shared by both fakes."""

    _path = ""

    def __init__(self, *, api_key: str, host: str, port: int, delay_s: float,
                 transcript: Transcript | None, shutdown_timeout_s: float) -> None:
        self.api_key = api_key
        self.host = host
        self.delay_s = delay_s
        """Seconds before each answer (a request still waiting when the fake closes is answered then)."""
        self.transcript = transcript
        """audio bytes as uploaded -> the text to answer; None: "caller said <ms> ms of audio"."""
        self.shutdown_timeout_s = shutdown_timeout_s
        self.requests: list[SttRequest] = []
        self._port = port
        self._fail_status: int | None = None
        self._changed = asyncio.Condition()
        self._handed_out = 0
        self._closing = asyncio.Event()
        self._loopback: LoopbackServer | None = None
        self.app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        self.app.add_api_route(self._path, self._handle, methods=["POST"])

    @property
    def port(self) -> int:
        if self._loopback is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._loopback.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_with(self, status: int | None) -> None:
        """Answer every valid request with HTTP `status` (in the vendor's error shape); None answers again."""
        self._fail_status = status

    async def wait_for_request(self, timeout_s: float = 2.0) -> SttRequest:
        """The next request not yet returned by this method, in arrival order."""
        wanted = self._handed_out
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) > wanted)
        self._handed_out += 1
        return self.requests[wanted]

    async def __aenter__(self) -> _FakeSttServer:
        self._loopback = LoopbackServer(self.app, host=self.host, port=self._port,
                                        name=f"fake-{type(self).__name__}", timeout_s=self.shutdown_timeout_s)
        await self._loopback.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closing.set()
        if self._loopback is not None:
            await self._loopback.stop()

    # -- per vendor -----------------------------------------------------------------------------------

    @abstractmethod
    def _audio_ms(self, audio: bytes, query: dict[str, str]) -> int:
        """How long the (valid) upload is."""

    @abstractmethod
    def _check(self, headers: dict[str, str], query: dict[str, str], form: dict[str, str],
               audio: bytes | None) -> tuple[int, JsonDict] | None:
        """The error the real API would answer, or None when the request is valid."""

    @abstractmethod
    def _success(self, text: str, audio: bytes, query: dict[str, str], form: dict[str, str]) -> JsonDict:
        """The vendor's success body."""

    @abstractmethod
    def _error(self, status: int, message: str) -> JsonDict:
        """The vendor's error body."""

    # -- the app --------------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> JSONResponse:
        headers = {key.lower(): value for key, value in request.headers.items()}
        query = dict(request.query_params)
        form: dict[str, str] = {}
        audio: bytes | None = None
        async with request.form() as fields:
            for key, value in fields.multi_items():
                if isinstance(value, UploadFile):
                    if key == "file":
                        audio = await value.read()
                    else:
                        form[key] = "<file>"
                else:
                    form[key] = value
        answer = self._check(headers, query, form, audio)
        if answer is None and self._fail_status is not None:
            answer = self._fail_status, self._error(self._fail_status, "Failure requested by the test.")
        if answer is None:
            assert audio is not None
            text = (self.transcript(audio) if self.transcript is not None
                    else f"caller said {self._audio_ms(audio, query)} ms of audio")
            answer = 200, self._success(text, audio, query, form)
        status_code, body = answer
        self.requests.append(SttRequest(request.url.path, headers, query, form, audio, status_code, body))
        async with self._changed:
            self._changed.notify_all()
        if self.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay_s)
        return JSONResponse(body, status_code=status_code)


CARTESIA_MODELS = frozenset({"ink-whisper", "ink-whisper-2025-06-04"})
CARTESIA_ENCODINGS = {"pcm_s16le": 2, "pcm_s32le": 4, "pcm_f16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1,
                      "pcm_alaw": 1}
_CARTESIA_FIELDS = frozenset({"model", "language", "timestamp_granularities[]"})


class FakeCartesia(_FakeSttServer):
    """Cartesia batch STT: `Authorization: Bearer`, a `Cartesia-Version` date, raw PCM per `encoding`."""

    _path = "/stt"

    def __init__(self, *, api_key: str = "sk_car_test", host: str = "127.0.0.1", port: int = 0,
                 delay_s: float = 0.0, transcript: Transcript | None = None,
                 shutdown_timeout_s: float = 5.0) -> None:
        super().__init__(api_key=api_key, host=host, port=port, delay_s=delay_s, transcript=transcript,
                         shutdown_timeout_s=shutdown_timeout_s)

    async def __aenter__(self) -> FakeCartesia:
        await super().__aenter__()
        return self

    def _audio_ms(self, audio: bytes, query: dict[str, str]) -> int:
        if "encoding" not in query:
            return 0  # a container; the fake does not parse it
        return len(audio) * 1000 // (CARTESIA_ENCODINGS[query["encoding"]] * int(query["sample_rate"]))

    def _check(self, headers: dict[str, str], query: dict[str, str], form: dict[str, str],
               audio: bytes | None) -> tuple[int, JsonDict] | None:
        if not secrets.compare_digest(headers.get("authorization", ""), f"Bearer {self.api_key}"):
            return 401, self._error(401, "Invalid API key.")
        version = headers.get("cartesia-version")
        if version is None or not _DATE.fullmatch(version):
            return 400, self._error(400, "The Cartesia-Version header is required (e.g. 2026-03-01).")
        encoding = query.get("encoding")
        if encoding is not None:
            if encoding not in CARTESIA_ENCODINGS:
                return 400, self._error(400, f"Invalid encoding: {encoding}.")
            if not query.get("sample_rate", "").isdigit() or int(query["sample_rate"]) <= 0:
                return 400, self._error(400, "sample_rate is required with a raw encoding.")
        unknown = sorted(set(form) - _CARTESIA_FIELDS)
        if unknown:
            return 400, self._error(400, f"Unknown field: {unknown[0]}.")
        if audio is None:
            return 400, self._error(400, "file is required.")
        if encoding is None and not audio.startswith(b"RIFF"):
            return 400, self._error(400, "Could not decode the audio; pass encoding and sample_rate for raw PCM.")
        if encoding is not None and len(audio) % CARTESIA_ENCODINGS[encoding]:
            return 400, self._error(400, "Audio length is not a whole number of samples.")
        if form.get("model") not in CARTESIA_MODELS:
            return 400, self._error(400, "model must be one of: " + ", ".join(sorted(CARTESIA_MODELS)) + ".")
        if not _LANGUAGE.fullmatch(form.get("language", "en")):
            return 400, self._error(400, "Invalid language.")
        granularity = form.get("timestamp_granularities[]")
        if granularity is not None and granularity != "word":
            return 400, self._error(400, "timestamp_granularities[] accepts only 'word'.")
        return None

    def _success(self, text: str, audio: bytes, query: dict[str, str], form: dict[str, str]) -> JsonDict:
        body: JsonDict = {"type": "transcript", "text": text,
                          "duration": self._audio_ms(audio, query) / 1000,
                          "language": form.get("language", "en"), "is_final": True,
                          "request_id": f"req_{len(self.requests) + 1:06d}"}
        if form.get("timestamp_granularities[]") == "word":
            body["words"] = _words(text, body["duration"], word_key="word")
        return body

    def _error(self, status: int, message: str) -> JsonDict:
        titles = {400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}
        return {"error_code": "concurrency_limited" if status == 429 else None,
                "title": titles.get(status, "Error"), "message": message,
                "request_id": f"req_{len(self.requests) + 1:06d}"}


SCRIBE_MODELS = frozenset({"scribe_v1", "scribe_v2", "scribe_v2_medical", "scribe_v3"})
_SCRIBE_FIELDS = frozenset({
    "model_id", "source_url", "cloud_storage_url", "language_code", "file_format", "timestamps_granularity",
    "diarize", "num_speakers", "diarization_threshold", "tag_audio_events", "temperature", "seed",
    "keyterms", "no_verbatim", "use_multi_channel", "webhook", "webhook_id", "webhook_metadata",
    "entity_detection", "additional_formats",
})
# Leading bytes of the containers Scribe accepts (a sample of them; raw μ-law matches none).
_CONTAINER_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\x1aE\xdf\xa3", b"FORM")


class FakeScribe(_FakeSttServer):
    """ElevenLabs Scribe: `xi-api-key`, multipart `model_id` + `file`; raw PCM only as `pcm_s16le_16`."""

    _path = "/v1/speech-to-text"

    def __init__(self, *, api_key: str = "xi-test-key", host: str = "127.0.0.1", port: int = 0,
                 delay_s: float = 0.0, transcript: Transcript | None = None,
                 shutdown_timeout_s: float = 5.0) -> None:
        super().__init__(api_key=api_key, host=host, port=port, delay_s=delay_s, transcript=transcript,
                         shutdown_timeout_s=shutdown_timeout_s)

    async def __aenter__(self) -> FakeScribe:
        await super().__aenter__()
        return self

    def _audio_ms(self, audio: bytes, query: dict[str, str]) -> int:
        return len(audio) // 32  # PCM16 at 16 kHz (the fake assumes it for containers too)

    def _check(self, headers: dict[str, str], query: dict[str, str], form: dict[str, str],
               audio: bytes | None) -> tuple[int, JsonDict] | None:
        if not secrets.compare_digest(headers.get("xi-api-key", ""), self.api_key):
            return 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        if "model_id" not in form:
            return 422, _validation_error("model_id", "missing", "Field required")
        unknown = sorted(set(form) - _SCRIBE_FIELDS)
        if unknown:
            return 422, _validation_error(unknown[0], "extra_forbidden", "Extra inputs are not permitted")
        if form["model_id"] not in SCRIBE_MODELS:
            return 400, self._error(400, f"Invalid model_id: {form['model_id']}.")
        sources = [name for name in ("file", "source_url", "cloud_storage_url")
                   if (audio is not None if name == "file" else name in form)]
        if len(sources) != 1:
            return 400, self._error(400, "Provide exactly one of file or source_url.")
        if audio is None:
            return 400, self._error(400, "The fake transcribes uploaded files only.")
        file_format = form.get("file_format", "other")
        if file_format == "pcm_s16le_16":
            if len(audio) % 2:
                return 400, self._error(400, "pcm_s16le_16 audio must be whole 16-bit samples.")
        elif file_format == "other":
            if not audio.startswith(_CONTAINER_MAGIC):
                return 400, self._error(400, "Could not decode the audio file (unsupported format).")
        else:
            return 400, self._error(400, "file_format must be 'pcm_s16le_16' or 'other'.")
        if "language_code" in form and not _LANGUAGE.fullmatch(form["language_code"]):
            return 400, self._error(400, "Invalid language_code.")
        return None

    def _success(self, text: str, audio: bytes, query: dict[str, str], form: dict[str, str]) -> JsonDict:
        duration_s = len(audio) / 32_000
        return {"language_code": form.get("language_code", "en"), "language_probability": 1.0, "text": text,
                "words": _words(text, duration_s, word_key="text", scribe=True),
                "transcription_id": f"tr_{len(self.requests) + 1:06d}", "audio_duration_secs": duration_s}

    def _error(self, status: int, message: str) -> JsonDict:
        return {"detail": {"status": "invalid_request" if status < 500 else "internal_error",
                           "message": message}}


def _validation_error(field: str, kind: str, message: str) -> JsonDict:
    return {"detail": [{"type": kind, "loc": ["body", field], "msg": message, "input": None}]}


def _words(text: str, duration_s: float, *, word_key: str, scribe: bool = False) -> list[JsonDict]:
    """Words spread evenly over the audio; Scribe also lists the spaces between them."""
    words = text.split()
    step = duration_s / max(1, len(words))
    out: list[JsonDict] = []
    for index, word in enumerate(words):
        start, end = round(index * step, 3), round((index + 1) * step, 3)
        if scribe and index:
            out.append({"text": " ", "start": start, "end": start, "type": "spacing", "logprob": 0.0})
        entry: JsonDict = {word_key: word, "start": start, "end": end}
        if scribe:
            entry.update(type="word", logprob=0.0)
        out.append(entry)
    return out

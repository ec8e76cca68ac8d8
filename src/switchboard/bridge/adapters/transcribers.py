"""Batch transcription of one caller utterance: Cartesia ink-whisper or ElevenLabs Scribe over HTTP.

Thin I/O over an injected `httpx.AsyncClient`: one request per utterance, a bound on the whole of it,
httpx exceptions and error statuses translated into UpstreamError. Neither URLs nor keys reach an error.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httpx

from switchboard.audio.resampling import mulaw_to_pcm16_16k
from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

CARTESIA_VERSION = "2026-03-01"


class Transcriber(Protocol):
    """Turns one utterance of telephone audio into text."""

    name: str

    async def transcribe_mulaw(self, mulaw: bytes) -> str:
        """μ-law 8 kHz mono -> the transcript ("" for silence).

        Raises:
            UpstreamTimeout, UpstreamUnavailable, UpstreamProtocolError.
        """
        ...


class CartesiaTranscriber:
    """Cartesia batch STT (`POST /stt`), which takes raw μ-law as is (protocols.md §4.1)."""

    name = "cartesia"

    def __init__(self, base_url: str, api_key: str, http_client: httpx.AsyncClient, *, timeout_s: float,
                 model: str = "ink-whisper", language: str = "en") -> None:
        self._url = f"{base_url.rstrip('/')}/stt"
        self._api_key = api_key
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._model = model
        self._language = language

    async def transcribe_mulaw(self, mulaw: bytes) -> str:
        """Raises: UpstreamTimeout, UpstreamUnavailable (5xx, 429, unreachable), UpstreamProtocolError."""
        return await _post_for_text(
            self._http_client, self.name, self._url, self._timeout_s,
            headers={"Authorization": f"Bearer {self._api_key}", "Cartesia-Version": CARTESIA_VERSION},
            params={"encoding": "pcm_mulaw", "sample_rate": "8000"},
            data={"model": self._model, "language": self._language},
            file=("utterance.ulaw", mulaw),
        )


class ScribeTranscriber:
    """ElevenLabs Scribe (`POST /v1/speech-to-text`); it takes no μ-law, so it gets PCM16 16 kHz (§3.3)."""

    name = "elevenlabs"

    def __init__(self, base_url: str, api_key: str, http_client: httpx.AsyncClient, *, timeout_s: float,
                 model: str = "scribe_v2", language: str = "en") -> None:
        self._url = f"{base_url.rstrip('/')}/v1/speech-to-text"
        self._api_key = api_key
        self._http_client = http_client
        self._timeout_s = timeout_s
        self._model = model
        self._language = language

    async def transcribe_mulaw(self, mulaw: bytes) -> str:
        """Raises: UpstreamTimeout, UpstreamUnavailable (5xx, 429, unreachable), UpstreamProtocolError."""
        # A long utterance takes tens of ms to convert: keep it off the event loop.
        pcm16 = await asyncio.to_thread(mulaw_to_pcm16_16k, mulaw)
        return await _post_for_text(
            self._http_client, self.name, self._url, self._timeout_s,
            headers={"xi-api-key": self._api_key},
            params={},
            data={"model_id": self._model, "language_code": self._language, "file_format": "pcm_s16le_16"},
            file=("utterance.pcm", pcm16),
        )


async def _post_for_text(http_client: httpx.AsyncClient, service: str, url: str, timeout_s: float, *,
                         headers: dict[str, str], params: dict[str, str], data: dict[str, str],
                         file: tuple[str, bytes]) -> str:
    # httpx's timeout bounds each phase; asyncio.timeout bounds the request as a whole.
    try:
        async with asyncio.timeout(timeout_s):
            response = await http_client.post(
                url, headers=headers, params=params, data=data,
                files={"file": (file[0], file[1], "application/octet-stream")},
                timeout=httpx.Timeout(timeout_s),
            )
    except (TimeoutError, httpx.TimeoutException):
        raise UpstreamTimeout(service, f"no transcript within {timeout_s} s", retryable=True) from None
    except httpx.TransportError:
        raise UpstreamUnavailable(service, "request failed", retryable=True) from None
    status = response.status_code
    if status >= 500 or status == 429:
        raise UpstreamUnavailable(service, f"HTTP {status}", retryable=True)
    if status != 200:
        raise UpstreamProtocolError(service, f"HTTP {status}", retryable=False)
    try:
        body: Any = response.json()
    except ValueError:
        raise UpstreamProtocolError(service, "response is not JSON", retryable=False) from None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise UpstreamProtocolError(service, "response has no text", retryable=False)
    return text.strip()

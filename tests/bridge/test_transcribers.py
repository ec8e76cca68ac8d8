"""Cartesia and Scribe transcribers against the fake STT servers, which check requests as the real APIs do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from switchboard.audio.g711 import mulaw_to_pcm16, pcm16_to_mulaw
from switchboard.bridge.adapters.transcribers import CartesiaTranscriber, ScribeTranscriber, Transcriber
from switchboard.errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from switchboard.fakes.transcription_servers import FakeCartesia, FakeScribe

CARTESIA_KEY = "sk_car_secret_0042"
XI_KEY = "xi-secret-key-0042"


def phone_audio(ms: int) -> bytes:
    """A 300 Hz tone as telephone μ-law, 8 bytes per ms."""
    t = np.arange(ms * 8) / 8_000
    return pcm16_to_mulaw((6_000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes())


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        yield client


@pytest.fixture
async def cartesia() -> AsyncIterator[FakeCartesia]:
    async with FakeCartesia(api_key=CARTESIA_KEY) as fake:
        yield fake


@pytest.fixture
async def scribe() -> AsyncIterator[FakeScribe]:
    async with FakeScribe(api_key=XI_KEY) as fake:
        yield fake


async def test_cartesia_gets_the_mulaw_as_is(cartesia: FakeCartesia, http_client: httpx.AsyncClient) -> None:
    transcriber: Transcriber = CartesiaTranscriber(cartesia.base_url, CARTESIA_KEY, http_client, timeout_s=2.0)
    mulaw = phone_audio(1_500)
    assert await transcriber.transcribe_mulaw(mulaw) == "caller said 1500 ms of audio"
    assert transcriber.name == "cartesia"
    request = await cartesia.wait_for_request()
    assert request.status_code == 200 and request.path == "/stt"
    assert request.audio == mulaw
    assert request.query == {"encoding": "pcm_mulaw", "sample_rate": "8000"}
    assert request.form == {"model": "ink-whisper", "language": "en"}
    assert request.headers["authorization"] == f"Bearer {CARTESIA_KEY}"
    assert request.headers["cartesia-version"] == "2026-03-01"


async def test_scribe_gets_16_khz_pcm16_of_the_right_length(scribe: FakeScribe,
                                                            http_client: httpx.AsyncClient) -> None:
    transcriber: Transcriber = ScribeTranscriber(scribe.base_url, XI_KEY, http_client, timeout_s=2.0,
                                                 language="de")
    mulaw = phone_audio(2_000)
    assert await transcriber.transcribe_mulaw(mulaw) == "caller said 2000 ms of audio"
    assert transcriber.name == "elevenlabs"
    request = await scribe.wait_for_request()
    assert request.status_code == 200 and request.path == "/v1/speech-to-text"
    assert request.form == {"model_id": "scribe_v2", "language_code": "de", "file_format": "pcm_s16le_16"}
    assert request.headers["xi-api-key"] == XI_KEY
    assert request.audio is not None and len(request.audio) == 4 * len(mulaw)
    pcm16_16k = np.frombuffer(request.audio, dtype="<i2")
    pcm16_8k = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2")
    assert np.array_equal(pcm16_16k[::2], pcm16_8k)  # upsampling kept every original sample


async def test_the_transcript_comes_from_the_fakes_function(cartesia: FakeCartesia,
                                                            http_client: httpx.AsyncClient) -> None:
    cartesia.transcript = lambda audio: f"  I need help with order {len(audio)}. "
    transcriber = CartesiaTranscriber(cartesia.base_url, CARTESIA_KEY, http_client, timeout_s=2.0)
    assert await transcriber.transcribe_mulaw(phone_audio(100)) == "I need help with order 800."


async def test_a_slow_transcriber_times_out(http_client: httpx.AsyncClient) -> None:
    async with FakeScribe(api_key=XI_KEY, delay_s=5.0) as slow:
        transcriber = ScribeTranscriber(slow.base_url, XI_KEY, http_client, timeout_s=0.2)
        with pytest.raises(UpstreamTimeout) as raised:
            await transcriber.transcribe_mulaw(phone_audio(200))
        assert raised.value.retryable and raised.value.service == "elevenlabs"
        assert (await slow.wait_for_request()).status_code == 200  # it arrived; the answer was too late


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_and_rate_limits_are_unavailable(cartesia: FakeCartesia,
                                                             http_client: httpx.AsyncClient, status: int) -> None:
    cartesia.fail_with(status)
    transcriber = CartesiaTranscriber(cartesia.base_url, CARTESIA_KEY, http_client, timeout_s=2.0)
    with pytest.raises(UpstreamUnavailable) as raised:
        await transcriber.transcribe_mulaw(phone_audio(100))
    assert raised.value.retryable and str(status) in str(raised.value)
    assert (await cartesia.wait_for_request()).body["title"]


async def test_a_wrong_key_is_a_protocol_error_without_the_key(scribe: FakeScribe,
                                                               http_client: httpx.AsyncClient) -> None:
    transcriber = ScribeTranscriber(scribe.base_url, "xi-wrong-9999", http_client, timeout_s=2.0)
    with pytest.raises(UpstreamProtocolError) as raised:
        await transcriber.transcribe_mulaw(phone_audio(100))
    assert not raised.value.retryable and "401" in str(raised.value) and "9999" not in str(raised.value)


async def test_an_unknown_model_is_refused_as_a_4xx(cartesia: FakeCartesia, http_client: httpx.AsyncClient) -> None:
    transcriber = CartesiaTranscriber(cartesia.base_url, CARTESIA_KEY, http_client, timeout_s=2.0,
                                      model="whisper-1")
    with pytest.raises(UpstreamProtocolError):
        await transcriber.transcribe_mulaw(phone_audio(100))
    assert (await cartesia.wait_for_request()).status_code == 400


async def test_nothing_listening_is_unavailable(http_client: httpx.AsyncClient) -> None:
    async with FakeCartesia(api_key=CARTESIA_KEY) as gone:
        base_url = gone.base_url
    transcriber = CartesiaTranscriber(base_url, CARTESIA_KEY, http_client, timeout_s=2.0)
    with pytest.raises(UpstreamUnavailable) as raised:
        await transcriber.transcribe_mulaw(phone_audio(100))
    assert raised.value.retryable and raised.value.__cause__ is None


@pytest.mark.parametrize("body", [b"<html>Bad gateway page</html>", b'["text"]', b'{"text": null}'])
async def test_an_answer_without_a_transcript_is_a_protocol_error(body: bytes) -> None:
    # A vendor-side proxy answering 200 with something else: httpx's in-process transport plays it.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        transcriber = ScribeTranscriber("https://api.elevenlabs.io", XI_KEY, client, timeout_s=2.0)
        with pytest.raises(UpstreamProtocolError):
            await transcriber.transcribe_mulaw(phone_audio(100))


# -- the fakes refuse what the real APIs refuse -------------------------------------------------------


async def test_scribe_refuses_raw_mulaw_sent_as_a_file(scribe: FakeScribe, http_client: httpx.AsyncClient) -> None:
    response = await http_client.post(
        f"{scribe.base_url}/v1/speech-to-text", headers={"xi-api-key": XI_KEY},
        data={"model_id": "scribe_v2"}, files={"file": ("call.ulaw", phone_audio(100))})
    assert response.status_code == 400
    assert response.json()["detail"]["status"] == "invalid_request"


async def test_scribe_needs_a_model_id(scribe: FakeScribe, http_client: httpx.AsyncClient) -> None:
    response = await http_client.post(
        f"{scribe.base_url}/v1/speech-to-text", headers={"xi-api-key": XI_KEY},
        data={"model": "scribe_v2", "file_format": "pcm_s16le_16"}, files={"file": ("a.pcm", b"\0\0" * 800)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "model_id"]


async def test_cartesia_needs_a_version_and_an_encoding_for_raw_audio(cartesia: FakeCartesia,
                                                                      http_client: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {CARTESIA_KEY}"}
    no_version = await http_client.post(
        f"{cartesia.base_url}/stt", headers=auth, params={"encoding": "pcm_mulaw", "sample_rate": "8000"},
        data={"model": "ink-whisper"}, files={"file": ("a.raw", phone_audio(100))})
    assert no_version.status_code == 400 and "Cartesia-Version" in no_version.json()["message"]
    no_encoding = await http_client.post(
        f"{cartesia.base_url}/stt", headers={**auth, "Cartesia-Version": "2026-03-01"},
        data={"model": "ink-whisper"}, files={"file": ("a.raw", phone_audio(100))})
    assert no_encoding.status_code == 400
    with_words = await http_client.post(
        f"{cartesia.base_url}/stt", headers={**auth, "Cartesia-Version": "2026-03-01"},
        params={"encoding": "pcm_mulaw", "sample_rate": "8000"},
        data={"model": "ink-whisper", "timestamp_granularities[]": "word"},
        files={"file": ("a.raw", phone_audio(1_000))})
    assert with_words.status_code == 200
    assert with_words.json()["type"] == "transcript" and with_words.json()["duration"] == 1.0
    assert [w["word"] for w in with_words.json()["words"]] == ["caller", "said", "1000", "ms", "of", "audio"]

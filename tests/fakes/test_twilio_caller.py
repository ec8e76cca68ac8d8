"""The simulated caller behaves as Twilio does: signed webhook and upgrade, framing, marks, clear."""

from __future__ import annotations

import asyncio
import base64
import http
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from twilio.request_validator import HMAC_SHA256, RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import Connect, VoiceResponse
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from switchboard.simulator.speech import mulaw_silence, mulaw_tone
from switchboard.simulator.twilio_caller import StreamRejected, TwilioCaller

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_BASE_URL = "https://voice.example.com"
STREAM_URL = "wss://voice.example.com/twilio-stream"


def webhook_app(stream_url: str) -> FastAPI:
    """A minimal voice webhook that validates the signature as our voice server must."""
    app = FastAPI()
    validator = RequestValidator(AUTH_TOKEN)

    @app.post("/twilio-voice-webhook")
    async def webhook(request: Request) -> Response:
        form = dict(await request.form())
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(PUBLIC_BASE_URL + "/twilio-voice-webhook", form, signature):
            return Response(status_code=403)
        answer = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=stream_url)
        stream.parameter(name="bot_profile_key", value="acme-support")
        stream.parameter(name="original_caller_number", value=str(form["From"]))
        answer.append(connect)
        return Response(answer.to_xml(), media_type="text/xml")

    return app


@dataclass
class StreamPeer:
    """The server end of the Media Stream, scripted by each test."""

    received: list[dict[str, Any]] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def check_signature(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(AUTH_TOKEN).validate(STREAM_URL, {}, signature):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "bad signature\n")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        async for message in connection:
            self.received.append(json.loads(message))
            async with self.arrived:
                self.arrived.notify_all()

    async def wait_for(self, event: str, count: int = 1, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        def matching() -> list[dict[str, Any]]:
            return [m for m in self.received if m["event"] == event]

        async with asyncio.timeout(timeout_s), self.arrived:
            await self.arrived.wait_for(lambda: len(matching()) >= count)
        return matching()


@pytest.fixture
async def peer() -> AsyncIterator[tuple[StreamPeer, Server]]:
    stream_peer = StreamPeer()
    async with serve(stream_peer.handle, "127.0.0.1", 0, process_request=stream_peer.check_signature) as server:
        yield stream_peer, server


def make_caller(server: Server) -> TwilioCaller:
    port = server.sockets[0].getsockname()[1]
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=webhook_app(STREAM_URL)))
    return TwilioCaller(f"http://127.0.0.1:{port}", auth_token=AUTH_TOKEN, public_base_url=PUBLIC_BASE_URL,
                        http_client=http_client)


async def media(connection: ServerConnection, stream_sid: str, mulaw: bytes) -> None:
    await connection.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                      "media": {"payload": base64.b64encode(mulaw).decode()}}))


async def mark(connection: ServerConnection, stream_sid: str, name: str) -> None:
    await connection.send(json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}))


async def test_signed_webhook_then_stream_start_and_media_frames(peer: tuple[StreamPeer, Server]) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        answer = await caller.place_call(to="+15551230001", from_="+15557654321",
                                         extra_params={"SipDomain": "acme.sip.twilio.com"})
        assert answer.status_code == 200
        assert answer.stream_url == STREAM_URL
        assert answer.stream_parameters == {"bot_profile_key": "acme-support",
                                            "original_caller_number": "+15557654321"}
        assert answer.params["CallStatus"] == "ringing" and answer.params["SipDomain"] == "acme.sip.twilio.com"
        assert caller.call_sid.startswith("CA") and len(caller.call_sid) == 34

        caller.say_mulaw(mulaw_tone(50, frequency_hz=440))
        await caller.connect_stream()
        frames = await stream_peer.wait_for("media", count=5)
        await caller.hang_up()

    connected, start = stream_peer.received[:2]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1"
    assert start["start"]["callSid"] == caller.call_sid
    assert start["start"]["streamSid"] == caller.stream_sid == start["streamSid"]
    assert start["start"]["customParameters"]["bot_profile_key"] == "acme-support"
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert [f["media"]["chunk"] for f in frames[:5]] == ["1", "2", "3", "4", "5"]
    assert [f["media"]["timestamp"] for f in frames[:5]] == ["0", "20", "40", "60", "80"]
    assert [f["sequenceNumber"] for f in frames[:3]] == ["2", "3", "4"]
    payloads = [base64.b64decode(f["media"]["payload"]) for f in frames]
    assert all(len(p) == 160 for p in payloads)
    assert payloads[0] == mulaw_tone(50, frequency_hz=440)[:160]
    assert payloads[2][80:] == mulaw_silence(10), "the last speech frame is padded with silence"
    assert payloads[3] == mulaw_silence(20)
    assert stream_peer.received[-1] == {"event": "stop", "sequenceNumber": stream_peer.received[-1]["sequenceNumber"],
                                        "streamSid": caller.stream_sid,
                                        "stop": {"accountSid": caller.account_sid, "callSid": caller.call_sid}}


async def test_a_mark_is_echoed_only_after_the_audio_before_it_has_played(
    peer: tuple[StreamPeer, Server],
) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        await stream_peer.wait_for("start")
        connection = stream_peer.connections[0]
        loop = asyncio.get_running_loop()

        await mark(connection, caller.stream_sid, "nothing-buffered")
        echoed = await stream_peer.wait_for("mark")
        assert echoed[0]["mark"] == {"name": "nothing-buffered"}
        assert echoed[0]["streamSid"] == caller.stream_sid and echoed[0]["sequenceNumber"].isdigit()

        sent_at = loop.time()
        agent_audio = mulaw_tone(400, frequency_hz=600)
        await media(connection, caller.stream_sid, agent_audio)
        await mark(connection, caller.stream_sid, "after-400ms")
        await caller.wait_for(lambda: "after-400ms" in caller.marks_echoed, timeout_s=2.0)
        assert 0.38 <= loop.time() - sent_at < 0.7
        await stream_peer.wait_for("mark", count=2)
        assert bytes(caller.heard_mulaw) == agent_audio
        await caller.hang_up()
    assert caller.protocol_errors == []


async def test_clear_drops_buffered_audio_and_echoes_pending_marks_at_once(
    peer: tuple[StreamPeer, Server],
) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        await stream_peer.wait_for("start")
        connection = stream_peer.connections[0]
        await media(connection, caller.stream_sid, mulaw_tone(1_000, frequency_hz=500))
        await mark(connection, caller.stream_sid, "first")
        await media(connection, caller.stream_sid, mulaw_tone(1_000, frequency_hz=700))
        await mark(connection, caller.stream_sid, "second")
        await caller.wait_for(lambda: len(caller.heard_mulaw) >= 8 * 200)
        assert caller.marks_echoed == []

        await connection.send(json.dumps({"event": "clear", "streamSid": caller.stream_sid}))
        echoed = await stream_peer.wait_for("mark", count=2, timeout_s=0.2)
        assert [m["mark"]["name"] for m in echoed] == ["first", "second"]
        heard_at_clear = len(caller.heard_mulaw)
        assert heard_at_clear < 8 * 400
        await asyncio.sleep(0.1)
        assert len(caller.heard_mulaw) == heard_at_clear, "nothing plays after a clear"
        assert caller.clears == 1
        await caller.hang_up()


async def test_server_messages_twilio_would_reject_are_recorded(peer: tuple[StreamPeer, Server]) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        await stream_peer.wait_for("start")
        connection = stream_peer.connections[0]
        await media(connection, "MZ-not-this-stream", mulaw_silence(20))
        await connection.send(json.dumps({"event": "media", "streamSid": caller.stream_sid,
                                          "media": {"payload": "%%%"}}))
        await connection.send(json.dumps({"event": "playAudio", "streamSid": caller.stream_sid}))
        await caller.wait_for(lambda: len(caller.protocol_errors) == 3)
        assert caller.heard_mulaw == b""
        await caller.hang_up()


async def test_the_server_closing_the_stream_ends_the_call(peer: tuple[StreamPeer, Server]) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        await stream_peer.wait_for("start")
        await stream_peer.connections[0].close()
        await caller.wait_for_stream_closed(timeout_s=2.0)
        assert caller.close_code == 1000
        await caller.hang_up()
    assert not any(m["event"] == "stop" for m in stream_peer.received)


async def test_bad_signatures_are_refused(peer: tuple[StreamPeer, Server]) -> None:
    _, server = peer
    async with make_caller(server) as caller:
        refused = await caller.place_call(to="+15551230001", from_="+15557654321", signature="bm9wZQ==")
        assert refused.status_code == 403 and refused.stream_url is None
        await caller.place_call(to="+15551230001", from_="+15557654321")
        with pytest.raises(StreamRejected) as raised:
            await caller.connect_stream(signature="bm9wZQ==")
        assert raised.value.status_code == 403


async def test_with_a_shared_key_the_webhook_and_upgrade_are_signed_with_its_secret_and_sha256() -> None:
    """As under a Webhooks Rule with a SharedKey: the settings header names the key and the algorithm, and the
    vendor's validator accepts the signature only with that secret and that algorithm."""
    secret = "shared-key-secret-0123456789"
    announced: list[str] = []

    def is_signed(url: str, params: dict[str, Any], headers: Any) -> bool:
        settings = headers.get("X-Twilio-Webhooks-Signature-Settings", "")
        signature = headers.get("X-Twilio-Signature", "")
        announced.append(settings)
        return (RequestValidator(secret).validate(url, params, signature, algorithm=get_signature_algorithm(settings))
                and not RequestValidator(secret).validate(url, params, signature)  # not SHA-1
                and not RequestValidator(AUTH_TOKEN).validate(url, params, signature))

    app = FastAPI()

    @app.post("/twilio-voice-webhook")
    async def webhook(request: Request) -> Response:
        if not is_signed(PUBLIC_BASE_URL + "/twilio-voice-webhook", dict(await request.form()), request.headers):
            return Response(status_code=403)
        answer = VoiceResponse()
        connect = Connect()
        connect.stream(url=STREAM_URL)
        answer.append(connect)
        return Response(answer.to_xml(), media_type="text/xml")

    def check_upgrade(connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        if not is_signed(STREAM_URL, {}, request.headers):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "bad signature\n")
        return None

    stream_peer = StreamPeer()
    async with serve(stream_peer.handle, "127.0.0.1", 0, process_request=check_upgrade) as server:
        port = server.sockets[0].getsockname()[1]
        http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        async with TwilioCaller(f"http://127.0.0.1:{port}", auth_token=AUTH_TOKEN, public_base_url=PUBLIC_BASE_URL,
                                http_client=http_client, shared_key=("KS0001", secret)) as caller:
            answer = await caller.place_call(to="+15551230001", from_="+15557654321")
            assert answer.status_code == 200 and answer.stream_url == STREAM_URL
            await caller.connect_stream()
            await stream_peer.wait_for("start")
            await caller.hang_up()
        await http_client.aclose()
    assert announced == [f"key=KS0001,algorithm={HMAC_SHA256}"] * 2


async def test_turn_latency_and_two_channel_recording(peer: tuple[StreamPeer, Server], tmp_path: Path) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        connection = (await stream_peer.wait_for("start")) and stream_peer.connections[0]
        caller.say_mulaw(mulaw_tone(300, frequency_hz=300) + mulaw_silence(200))
        await caller.wait_for_speech_sent(timeout_s=3.0)
        await asyncio.sleep(0.15)
        await media(connection, caller.stream_sid, mulaw_tone(200, frequency_hz=800))
        await caller.wait_for(lambda: len(caller.heard_mulaw) == 1_600, timeout_s=2.0)
        await caller.hang_up()

    [turn] = caller.turns
    # Measured from the last non-silent frame: the 200 ms of trailing silence count as waiting.
    assert turn.latency_ms is not None and 330 <= turn.latency_ms < 600
    assert turn.heard_ms == 200
    path = tmp_path / "call.wav"
    caller.write_wav(path)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        assert wav.getnframes() == len(caller.caller_track) == len(caller.agent_track)


async def test_playback_is_continuous_and_a_clear_stops_it_exactly_where_it_was(
    peer: tuple[StreamPeer, Server],
) -> None:
    stream_peer, server = peer
    async with make_caller(server) as caller:
        await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        await stream_peer.wait_for("start")
        connection = stream_peer.connections[0]
        first, second = mulaw_tone(300, frequency_hz=500), mulaw_tone(300, frequency_hz=900)
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        await media(connection, caller.stream_sid, first)
        await mark(connection, caller.stream_sid, "after-first")
        await media(connection, caller.stream_sid, second)
        await caller.wait_for(lambda: "after-first" in caller.marks_echoed, timeout_s=2.0)
        # Echoed when its audio has played (300 ms after it started), not on a 20 ms frame tick.
        assert 0.29 <= loop.time() - sent_at < 0.45
        await caller.wait_for(lambda: caller.played_ms >= 400, timeout_s=2.0)

        await connection.send(json.dumps({"event": "clear", "streamSid": caller.stream_sid}))
        await caller.wait_for(lambda: caller.clears == 1, timeout_s=2.0)

        [at_clear] = caller.played_ms_at_clears
        first_payload = base64.b64encode(first).decode()
        second_payload = base64.b64encode(second).decode()
        assert caller.heard_ms_of([first_payload]) == 300
        assert 0 < caller.heard_ms_of([second_payload]) < 300
        assert at_clear == 300 + caller.heard_ms_of([second_payload])
        await asyncio.sleep(0.1)
        assert caller.played_ms == at_clear and len(caller.heard_mulaw) == at_clear * 8
        await caller.hang_up()

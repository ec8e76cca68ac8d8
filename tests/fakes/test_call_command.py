"""`switchboard call` against a scripted voice server on 127.0.0.1: turns, barge-in, recording, transcript."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from switchboard.simulator.command import call_command
from switchboard.simulator.speech import mulaw_to_pcm16, mulaw_tone, rms

AUTH_TOKEN = "command-test-token"
SERVICE_TOKEN = "service-token"


@dataclass
class ScriptedVoiceServer:
    """Greets, answers each caller utterance with 600 ms of audio, honours signatures, clears on barge-in."""

    public_base_url: str = ""
    events: list[str] = field(default_factory=list)
    dtmf: list[dict[str, object]] = field(default_factory=list)
    call_sids: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        validator = RequestValidator(AUTH_TOKEN)

        @app.post("/twilio-voice-webhook")
        async def webhook(request: Request) -> Response:
            form = dict(await request.form())
            if not validator.validate(self.public_base_url + "/twilio-voice-webhook", form,
                                      request.headers.get("X-Twilio-Signature", "")):
                return Response(status_code=403)
            self.call_sids.append(str(form["CallSid"]))
            answer = VoiceResponse()
            connect = Connect()
            connect.stream(url=self.public_base_url.replace("http://", "wss://") + "/twilio-stream")
            answer.append(connect)
            return Response(answer.to_xml(), media_type="text/xml")

        @app.websocket("/twilio-stream")
        async def stream(websocket: WebSocket) -> None:
            stream_url = self.public_base_url.replace("http://", "wss://") + "/twilio-stream"
            if not validator.validate(stream_url, {}, websocket.headers.get("X-Twilio-Signature", "")):
                await websocket.close(code=1008)
                return
            await websocket.accept()
            await self._converse(websocket)

        @app.get("/api/conversations")
        async def conversations(request: Request, call_sid: str) -> dict[str, object]:
            if request.headers.get("Authorization") != f"Bearer {SERVICE_TOKEN}":
                return {"conversations": []}
            return {"conversations": [{"call_sid": call_sid, "status": "ended", "end_reason": "caller_hung_up",
                                       "messages": [{"role": "assistant", "text": "Hello from the test."}]}]}

        return app

    async def _converse(self, websocket: WebSocket) -> None:
        stream_sid = ""
        speaking_frames = quiet_frames = 0
        replies = 0
        async def play(ms: int, label: str) -> None:
            await websocket.send_text(json.dumps({"event": "media", "streamSid": stream_sid, "media": {
                "payload": base64.b64encode(mulaw_tone(ms, frequency_hz=500)).decode()}}))
            await websocket.send_text(json.dumps({"event": "mark", "streamSid": stream_sid,
                                                  "mark": {"name": label}}))
        while True:
            message = json.loads(await websocket.receive_text())
            self.events.append(message["event"])
            if message["event"] == "dtmf":
                self.dtmf.append(message)
            if message["event"] == "start":
                stream_sid = message["streamSid"]
                await play(500, "greeting")
            elif message["event"] == "media":
                is_loud = rms(mulaw_to_pcm16(base64.b64decode(message["media"]["payload"]))) > 300
                if is_loud:
                    speaking_frames += 1
                    quiet_frames = 0
                    if speaking_frames == 5 and replies:
                        await websocket.send_text(json.dumps({"event": "clear", "streamSid": stream_sid}))
                elif speaking_frames:
                    quiet_frames += 1
                    if quiet_frames == 15:  # 300 ms of quiet ends the caller's turn
                        speaking_frames = quiet_frames = 0
                        replies += 1
                        await play(2_000 if replies == 1 else 600, f"reply-{replies}")
            elif message["event"] == "stop":
                await websocket.close()
                return


@pytest.fixture
async def voice_server() -> AsyncIterator[tuple[str, ScriptedVoiceServer]]:
    scripted = ScriptedVoiceServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    scripted.public_base_url = "http://voice.example.test"
    server = uvicorn.Server(uvicorn.Config(scripted.app(), log_level="warning", lifespan="off"))
    runner = asyncio.create_task(server.serve(sockets=[sock]), name="scripted-voice-server")
    async with asyncio.timeout(5.0):
        while not server.started:  # uvicorn exposes no startup event
            if runner.done():
                runner.result()
            await asyncio.sleep(0.01)
    try:
        yield base_url, scripted
    finally:
        server.should_exit = True
        async with asyncio.timeout(5.0):
            await runner
        sock.close()


def command_args(voice_url: str, **overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {"voice_url": voice_url, "to": "+15551230001", "from_number": "+15557654321",
                                 "say": ["Hi there."], "wav": None, "barge_in": False, "record": None,
                                 "timeout_s": 30.0}
    values.update(overrides)
    return argparse.Namespace(**values)


async def test_a_call_with_two_sentences_a_recording_and_the_transcript(
    voice_server: tuple[str, ScriptedVoiceServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, scripted = voice_server
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("PUBLIC_BASE_URL", scripted.public_base_url)
    monkeypatch.setenv("APP_SERVER_URL", base_url)
    monkeypatch.setenv("SWITCHBOARD_SERVICE_TOKEN", SERVICE_TOKEN)
    record = tmp_path / "call.wav"
    args = command_args(base_url, say=["Hi.", "Bye now."], record=str(record))

    assert await asyncio.to_thread(call_command, args) == 0

    out = capsys.readouterr().out
    assert "agent greeting: 0.50 s of audio heard" in out
    assert "caller: Hi." in out and "caller: Bye now." in out
    assert "agent: 2.00 s of audio heard, first audio" in out
    assert "agent: 0.60 s of audio heard, first audio" in out
    from switchboard.simulator.speech import neural_voice_available

    voice_line = ("the caller speaks with the local neural voice" if neural_voice_available()
                  else "speech-like synthetic signal")
    assert voice_line in out
    assert "assistant: Hello from the test." in out
    assert scripted.events[:2] == ["connected", "start"] and scripted.events[-1] == "stop"
    with wave.open(str(record), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() > 8_000


async def test_barge_in_interrupts_the_first_answer(
    voice_server: tuple[str, ScriptedVoiceServer], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, scripted = voice_server
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("PUBLIC_BASE_URL", scripted.public_base_url)
    monkeypatch.delenv("APP_SERVER_URL", raising=False)

    assert await asyncio.to_thread(call_command, command_args(base_url, say=["Hi."], barge_in=True)) == 0

    out = capsys.readouterr().out
    assert "(interrupted)" in out
    assert "the server cleared the agent's audio" in out


async def test_a_wrong_token_is_reported(
    voice_server: tuple[str, ScriptedVoiceServer], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, scripted = voice_server
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    monkeypatch.setenv("PUBLIC_BASE_URL", scripted.public_base_url)
    assert await asyncio.to_thread(call_command, command_args(base_url)) == 1
    assert "webhook answered HTTP 403" in capsys.readouterr().out
    assert scripted.call_sids == []


async def test_keys_are_pressed_in_script_order_as_twilio_sends_them(
    voice_server: tuple[str, ScriptedVoiceServer], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from switchboard.cli import _parser

    base_url, scripted = voice_server
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("PUBLIC_BASE_URL", scripted.public_base_url)
    monkeypatch.delenv("APP_SERVER_URL", raising=False)
    args = _parser().parse_args(["call", "--voice-url", base_url, "--say", "Hi.", "--keys", "4512#",
                                 "--say", "keys:0", "--timeout-s", "30"])
    assert args.script == [("say", "Hi."), ("keys", "4512#"), ("say", "keys:0")]

    assert await asyncio.to_thread(call_command, args) == 0

    out = capsys.readouterr().out
    assert out.index("caller: Hi.") < out.index("caller presses on the keypad: 4512#") < out.index(
        "caller presses on the keypad: 0")
    assert [m["dtmf"] for m in scripted.dtmf] == [{"track": "inbound_track", "digit": d} for d in "4512#0"]
    sequence = [int(str(m["sequenceNumber"])) for m in scripted.dtmf]
    assert sequence == sorted(sequence) and all(m["streamSid"] for m in scripted.dtmf)
    assert set(scripted.dtmf[0]) == {"event", "sequenceNumber", "streamSid", "dtmf"}

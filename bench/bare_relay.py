"""A bare Twilio <-> Realtime relay: the floor the voice server is compared against.

It only moves JSON between a Twilio-side socket and a model-side socket (picows, uvloop, orjson):
`media` -> `input_audio_buffer.append`, `response.output_audio.delta` -> `media`, and on
`speech_started` a `clear` plus a `response.cancel`. No signatures, no marks, no playback
tracking, no pacing, no logging. Run: `python bench/bare_relay.py --port P --model-url ws://...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

SESSION_UPDATE = orjson.dumps({"type": "session.update", "session": {
    "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}},
                                  "output": {"format": {"type": "audio/pcmu"}}}}})
GREETING = orjson.dumps({"type": "response.create", "response": {"instructions": "Greet the caller."}})
CANCEL = orjson.dumps({"type": "response.cancel"})


class ModelSide(WSListener):
    def __init__(self, call: TwilioSide) -> None:
        super().__init__()
        self.call = call

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        event = orjson.loads(frame.get_payload_as_bytes())
        kind = event.get("type")
        twilio = self.call.twilio
        if kind == "response.output_audio.delta":
            twilio.send(WSMsgType.TEXT, orjson.dumps(
                {"event": "media", "streamSid": self.call.stream_sid, "media": {"payload": event["delta"]}}))
        elif kind == "input_audio_buffer.speech_started":
            twilio.send(WSMsgType.TEXT, orjson.dumps({"event": "clear", "streamSid": self.call.stream_sid}))
            transport.send(WSMsgType.TEXT, CANCEL)
        elif kind == "session.created":
            transport.send(WSMsgType.TEXT, SESSION_UPDATE)
            transport.send(WSMsgType.TEXT, GREETING)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.call.twilio.send_close(1000)
        self.call.twilio.disconnect()


class TwilioSide(WSListener):
    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay
        self.model: WSTransport | None = None
        self.backlog: list[bytes] = []
        self.stream_sid = ""
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.twilio = transport
        self.relay.spawn(self._connect_model())

    async def _connect_model(self) -> None:
        try:
            model, _ = await ws_connect(lambda: ModelSide(self), self.relay.model_url, websocket_handshake_timeout=10)
        except (OSError, TimeoutError, ConnectionError):
            self.twilio.disconnect()
            return
        if self.closed:
            model.disconnect()
            return
        self.model = model
        for message in self.backlog:
            model.send(WSMsgType.TEXT, message)
        self.backlog.clear()

    def _to_model(self, message: bytes) -> None:
        if self.model is None:
            self.backlog.append(message)
        else:
            self.model.send(WSMsgType.TEXT, message)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        event = message.get("event")
        if event == "media":
            self._to_model(orjson.dumps({"type": "input_audio_buffer.append", "audio": message["media"]["payload"]}))
        elif event == "start":
            self.stream_sid = message["start"]["streamSid"]
        elif event == "stop":
            transport.send_close(1000)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.model is not None:
            self.model.send_close(1000)
            self.model.disconnect()


class Relay:
    def __init__(self, model_url: str) -> None:
        self.model_url = model_url
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: object) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def main(port: int, model_url: str) -> None:
    relay = Relay(model_url)
    server = await ws_create_server(lambda request: TwilioSide(relay), "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-url", required=True)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.model_url))

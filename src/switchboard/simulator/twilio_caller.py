"""A simulated Twilio phone call against our voice server: the signed webhook, then the Media Stream.

`TwilioCaller` does what Twilio does (protocols.md §2): it posts the incoming-call webhook signed with
`X-Twilio-Signature`, reads the TwiML, opens the `<Stream>` WebSocket with a signed upgrade, sends
`connected`, `start` and a `media` frame every 20 ms of stream time, and plays the server's audio at
real time: continuously while any is queued (a chunk that arrives with the buffer empty starts at once),
each `mark` echoed the moment the audio sent before it has played (not on a 20 ms frame grid), and `clear`
dropping what is queued and echoing every pending mark at once. Time comes from the running event loop
(`loop.time()`), so a virtual-time loop drives it too.

    async with TwilioCaller("http://127.0.0.1:8080", auth_token=token) as caller:
        answer = await caller.place_call(to="+15551230001", from_="+15557654321")
        await caller.connect_stream()
        caller.say_mulaw(synthesize_mulaw("Where is my order?"))
        await caller.wait_for(lambda: caller.turns and caller.turns[-1].first_media_at_s is not None)
        await caller.hang_up()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.audio.dtmf import dtmf_tone_mulaw
from switchboard.simulator.speech import FRAME_BYTES, FRAME_MS, MULAW_SILENCE, write_stereo_wav
from switchboard.simulator.twilio_signing import SharedKey, twilio_signature_headers

__all__ = ["AgentTurn", "CallAnswer", "ReceivedMessage", "StreamRejected", "TwilioCaller"]

JsonDict: TypeAlias = dict[str, Any]

WEBHOOK_PATH = "/twilio-voice-webhook"
_SILENT_BYTES = frozenset({0xFF, 0x7F})  # mu-law +0 and -0


class StreamRejected(Exception):
    """The voice server refused the Media Stream WebSocket upgrade (e.g. 403 for a bad signature)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"stream upgrade refused with HTTP {status_code}")
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """The voice server's answer to the incoming-call webhook."""

    status_code: int
    twiml: str
    params: dict[str, str]
    """The form we posted (what Twilio would have sent)."""
    stream_url: str | None = None
    stream_parameters: dict[str, str] = field(default_factory=dict)
    said: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    """Top-level TwiML verbs in order, e.g. ("Connect",) or ("Say", "Hangup")."""

    @property
    def hangs_up(self) -> bool:
        return "Hangup" in self.verbs


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    at_s: float
    """Event-loop time of arrival (seconds)."""
    message: JsonDict | str
    """The parsed JSON object, or the raw text when it was not a JSON object."""

    @property
    def event(self) -> str | None:
        return self.message.get("event") if isinstance(self.message, dict) else None


@dataclass(slots=True)
class AgentTurn:
    """One exchange: the caller's queued speech ended, then the agent answered (or didn't)."""

    speech_ended_at_s: float
    """Loop time the last non-silent caller frame of the utterance was sent."""
    first_media_at_s: float | None = None
    """Loop time of the first agent `media` received after that."""
    received_mulaw_bytes: int = 0
    played_mulaw_bytes: int = 0

    @property
    def latency_ms(self) -> float | None:
        if self.first_media_at_s is None:
            return None
        return (self.first_media_at_s - self.speech_ended_at_s) * 1000

    @property
    def heard_ms(self) -> float:
        return self.played_mulaw_bytes / 8


@dataclass(slots=True)
class _MediaSpan:
    """Where one received `media` sits in the playback stream, in bytes; a `clear` cuts `end` short."""

    start: int
    end: int
    payload: str


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def parse_twiml(status_code: int, twiml: str, params: dict[str, str]) -> CallAnswer:
    """Read the parts of a TwiML answer a call simulation needs (stream URL and parameters, Say, verbs)."""
    if status_code != 200 or not twiml.strip():
        return CallAnswer(status_code, twiml, params)
    root = ElementTree.fromstring(twiml)
    if root.tag != "Response":
        raise ValueError(f"TwiML root is <{root.tag}>, not <Response>")
    stream_url = None
    stream_parameters: dict[str, str] = {}
    said = []
    for element in root.iter():
        if element.tag == "Stream" and stream_url is None:
            stream_url = element.get("url")
            for parameter in element.findall("Parameter"):
                stream_parameters[parameter.get("name", "")] = parameter.get("value", "")
        elif element.tag == "Say":
            said.append((element.text or "").strip())
    return CallAnswer(status_code, twiml, params, stream_url, stream_parameters, tuple(said),
                      tuple(child.tag for child in root))


class TwilioCaller:
    """One simulated inbound call, as Twilio would place it against `voice_base_url`.

    `public_base_url` is the URL Twilio would use (what the server signs against, PUBLIC_BASE_URL);
    it defaults to `voice_base_url`. `http_client` (e.g. over `httpx.ASGITransport`) replaces the
    webhook's HTTP client; the caller closes only a client it created. `shared_key` (key id, secret) signs
    the webhook and the stream upgrade as a Webhooks Rule with a SharedKey does (HMAC-SHA256, announced by
    `X-Twilio-Webhooks-Signature-Settings`) instead of with the Auth Token. The stream is always opened on
    `voice_base_url`'s host, whatever host the TwiML names, but signed over the TwiML's URL exactly, as
    Twilio signs what it dialled.

    Records: `received` (every server message with its arrival time), `heard_mulaw` (agent audio actually
    played, brought up to date at each frame tick, mark echo and clear; `played_ms` is exact at any moment),
    `marks_echoed` (names, in echo order), `clears` (count), `played_ms_at_clears` (playback position when
    each `clear` arrived), `turns` (per-turn latency), `protocol_errors` (server messages Twilio would
    reject), `sent` (every message we sent); `heard_ms_of(payloads)` says how much of given `media` played.
    Use it as `async with`, which hangs up and ends its tasks on exit.
    """

    def __init__(self, voice_base_url: str, *, auth_token: str, account_sid: str | None = None,
                 public_base_url: str | None = None, call_sid: str | None = None, shared_key: SharedKey | None = None,
                 http_client: httpx.AsyncClient | None = None, http_timeout_s: float = 10.0,
                 connect_timeout_s: float = 5.0, close_timeout_s: float = 2.0) -> None:
        self.voice_base_url = voice_base_url.rstrip("/")
        self.public_base_url = (public_base_url or voice_base_url).rstrip("/")
        self.account_sid = account_sid or _new_sid("AC")
        self.call_sid = call_sid or _new_sid("CA")
        self.stream_sid = _new_sid("MZ")
        self.connect_timeout_s = connect_timeout_s
        self.close_timeout_s = close_timeout_s
        self.answer: CallAnswer | None = None
        self.received: list[ReceivedMessage] = []
        self.sent: list[JsonDict | str] = []
        self.heard_mulaw = bytearray()
        self.caller_track = bytearray()
        """Every mu-law byte the caller sent, one 160-byte frame per 20 ms tick."""
        self.agent_track = bytearray()
        """What the caller heard, aligned with `caller_track` (silence where nothing played)."""
        self.marks_echoed: list[str] = []
        self.clears = 0
        self.played_ms_at_clears: list[float] = []
        self._media_spans: list[_MediaSpan] = []  # every media received, in stream order
        self.turns: list[AgentTurn] = []
        self.protocol_errors: list[str] = []
        self.close_code: int | None = None
        self._auth_token = auth_token
        self.shared_key = shared_key
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(http_timeout_s))
        self._stream: ClientConnection | None = None
        self._sequence_number = 0
        self._outgoing = bytearray()
        self._utterance_had_speech = False
        self._last_speech_frame_at_s: float | None = None
        self._since_last_speech: AgentTurn | None = None
        self._playback = bytearray()  # received and not yet moved to heard_mulaw
        self._played_total = 0  # bytes moved to heard_mulaw
        self._queued_total = 0  # bytes received (what a clear dropped excepted)
        # Playback runs continuously from byte `_clock_bytes` at loop time `_clock_at` while audio is queued.
        self._clock_bytes = 0
        self._clock_at = 0.0
        self._track_backlog = bytearray()  # played, not yet laid on the 20 ms grid of agent_track
        self._pending_marks: list[tuple[int, str]] = []
        self._marks_changed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._stream_closed = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False

    # -- webhook ------------------------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        """The public URL Twilio posts to, and signs."""
        return self.public_base_url + WEBHOOK_PATH

    def webhook_params(self, to: str, from_: str, extra_params: Mapping[str, str] | None = None) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Called": to,
            "Caller": from_,
            "Direction": "inbound",
            "From": from_,
            "To": to,
        }
        params.update(extra_params or {})
        return params

    async def place_call(self, *, to: str, from_: str, extra_params: Mapping[str, str] | None = None,
                         signature: str | None = None) -> CallAnswer:
        """POST the signed incoming-call webhook and parse the TwiML answer.

        `extra_params` adds or overrides form fields (`SipDomain`, `ApplicationSid`, `SipHeader_X-...`).
        `signature` replaces the computed `X-Twilio-Signature` (to test rejection).
        Raises:
            httpx.HTTPError: the voice server could not be reached.
        """
        params = self.webhook_params(to, from_, extra_params)
        headers = {
            **self._signature_headers(self.webhook_url, params, signature),
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
        }
        response = await self._http.post(self.voice_base_url + WEBHOOK_PATH, data=params, headers=headers)
        self.answer = parse_twiml(response.status_code, response.text, params)
        return self.answer

    def _signature_headers(self, url: str, params: Mapping[str, str], signature: str | None) -> dict[str, str]:
        return twilio_signature_headers(url, params, auth_token=self._auth_token, shared_key=self.shared_key,
                                        signature=signature)

    # -- media stream ---------------------------------------------------------------------------------------

    def _connect_url(self, stream_url: str) -> str:
        voice = urlsplit(self.voice_base_url)
        target = urlsplit(stream_url)
        scheme = "wss" if voice.scheme == "https" else "ws"
        return urlunsplit((scheme, voice.netloc, target.path, target.query, ""))

    async def connect_stream(self, *, signature: str | None = None,
                             custom_parameters: Mapping[str, str] | None = None) -> None:
        """Open the `<Stream>` WebSocket, send `connected` and `start`, then stream media every 20 ms.

        Uses the TwiML from `place_call`. `custom_parameters` overrides the TwiML `<Parameter>`s.
        Raises:
            StreamRejected: the server answered the upgrade with something other than 101.
            RuntimeError: no `<Stream>` in the TwiML.
        """
        if self.answer is None or self.answer.stream_url is None:
            raise RuntimeError("no <Stream> URL: place_call() first, and the TwiML must <Connect><Stream>")
        stream_url = urljoin(self.webhook_url.replace("https://", "wss://", 1), self.answer.stream_url)
        headers = {
            **self._signature_headers(stream_url, {}, signature),
            "User-Agent": "Twilio.TmeWs/1.0",
        }
        try:
            self._stream = await connect(self._connect_url(stream_url), additional_headers=headers,
                                         open_timeout=self.connect_timeout_s, max_size=None,
                                         compression=None, close_timeout=self.close_timeout_s)
        except InvalidStatus as exc:
            raise StreamRejected(exc.response.status_code) from None
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        parameters = dict(self.answer.stream_parameters if custom_parameters is None else custom_parameters)
        await self._send(self._sequenced({
            "event": "start",
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }))
        self._runner = asyncio.create_task(self._run_stream(self._stream), name="twilio-caller-stream")

    def say_mulaw(self, mulaw: bytes) -> None:
        """Queue caller audio (8 kHz mu-law); it is sent in 20 ms frames after anything already queued."""
        self._outgoing.extend(mulaw)

    @property
    def is_speaking(self) -> bool:
        """Whether queued caller audio is still being sent."""
        return bool(self._outgoing)

    @property
    def is_stream_closed(self) -> bool:
        return self._stream_closed.is_set()

    @property
    def has_unplayed_audio(self) -> bool:
        return self._position(asyncio.get_running_loop().time()) < self._queued_total

    @property
    def played_ms(self) -> float:
        """Agent audio played so far, exactly (not rounded to frames), in ms."""
        return self._position(asyncio.get_running_loop().time()) / 8

    def heard_ms_of(self, payloads: list[str]) -> float:
        """How much of the `media` messages carrying these payloads has played so far, in ms."""
        wanted = set(payloads)
        position = self._position(asyncio.get_running_loop().time())
        return sum(max(0.0, min(span.end, position) - span.start) for span in self._media_spans
                   if span.payload in wanted) / 8

    @property
    def stream_ms(self) -> int:
        """Stream time: 20 ms per media frame sent."""
        return len(self.caller_track) // 8

    async def send_dtmf(self, digit: str) -> None:
        """One `dtmf` message exactly as Twilio sends it (one key per message, `inbound_track`)."""
        await self._send(self._sequenced({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}}))

    async def press_keys(self, keys: str, *, tone_ms: int = 100, gap_ms: int = 150, with_tones: bool = True) -> None:
        """Press keys as a caller does: each key's tone goes into the caller's audio (the network plays it;
        `with_tones=False` leaves it out) and Twilio's `dtmf` message follows once the tone is detected.

        Waits for queued caller audio to be sent first; returns after the last key's gap.
        """
        await self.wait_for_speech_sent(timeout_s=60.0)
        for key in keys:
            if with_tones:
                self.say_mulaw(dtmf_tone_mulaw(key, tone_ms))
                # Twilio reports a key after it has heard some of its tone.
                await asyncio.sleep(min(tone_ms, 60) / 1000)
            await self.send_dtmf(key)
            await asyncio.sleep((max(0, tone_ms - 60) + gap_ms) / 1000 if with_tones else gap_ms / 1000)

    async def send_raw(self, text: str) -> None:
        """Send one text frame as is (for malformed-message tests)."""
        await self._send(text)

    async def hang_up(self) -> None:
        """Send `stop` and close the WebSocket (the caller hung up). Safe to call twice or after a close."""
        if self._stream is not None and not self.is_stream_closed and not self._stopped:
            self._stopped = True
            with contextlib.suppress(ConnectionClosed):
                await self._send(self._sequenced({
                    "event": "stop", "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}))
            async with asyncio.timeout(self.close_timeout_s):
                await self._stream.close()
        await self._wait_for_runner()

    async def drop_connection(self, *, send_stop: bool = True) -> None:
        """Hang up the rude way: optionally `stop`, then the TCP connection is cut, with no close handshake."""
        if self._stream is not None and not self.is_stream_closed and not self._stopped:
            self._stopped = True
            if send_stop:
                with contextlib.suppress(ConnectionClosed):
                    await self._send(self._sequenced({
                        "event": "stop", "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}))
            self._stream.transport.abort()
        await self._wait_for_runner()

    async def aclose(self) -> None:
        try:
            await self.hang_up()
        finally:
            if self._owns_http:
                await self._http.aclose()

    async def __aenter__(self) -> TwilioCaller:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- waiting ------------------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `predicate()` is true; it is re-checked on every message, frame tick and close.

        Raises:
            TimeoutError: still false after `timeout_s`.
        """
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for_message(self, event: str, *, predicate: Callable[[JsonDict], bool] | None = None,
                               after_index: int = 0, timeout_s: float = 5.0) -> ReceivedMessage:
        """The first received message with this `event` (at or after `received[after_index]`)."""
        def find() -> ReceivedMessage | None:
            for received in self.received[after_index:]:
                message = received.message
                if isinstance(message, dict) and received.event == event and (
                        predicate is None or predicate(message)):
                    return received
            return None

        await self.wait_for(lambda: find() is not None, timeout_s)
        found = find()
        assert found is not None
        return found

    async def wait_for_stream_closed(self, timeout_s: float = 5.0) -> None:
        await self.wait_for(self._stream_closed.is_set, timeout_s)

    async def wait_for_speech_sent(self, timeout_s: float = 30.0) -> None:
        """Wait until all queued caller audio has been sent."""
        await self.wait_for(lambda: not self._outgoing or self.is_stream_closed, timeout_s)

    async def wait_for_agent_quiet(self, quiet_s: float = 1.0, timeout_s: float = 30.0) -> None:
        """Wait until agent audio has finished playing and no new `media` arrived for `quiet_s`."""
        loop = asyncio.get_running_loop()

        def is_quiet() -> bool:
            if self.is_stream_closed:
                return True
            last_media = next((r.at_s for r in reversed(self.received) if r.event == "media"), None)
            return not self.has_unplayed_audio and (last_media is None or loop.time() - last_media >= quiet_s)

        await self.wait_for(is_quiet, timeout_s)

    # -- recording --------------------------------------------------------------------------------------------

    def write_wav(self, path: str | Path) -> None:
        """Write the call as 8 kHz 16-bit stereo: caller left, agent (as heard) right. Blocking file I/O."""
        write_stereo_wav(path, bytes(self.caller_track), bytes(self.agent_track))

    # -- internals ---------------------------------------------------------------------------------------------

    def _sequenced(self, message: JsonDict) -> JsonDict:
        self._sequence_number += 1
        return {"event": message["event"], "sequenceNumber": str(self._sequence_number),
                "streamSid": self.stream_sid, **{k: v for k, v in message.items() if k != "event"}}

    async def _send(self, message: JsonDict | str) -> None:
        if self._stream is None:
            raise RuntimeError("stream not connected")
        text = message if isinstance(message, str) else json.dumps(message)
        async with self._send_lock:
            await self._stream.send(text)
        self.sent.append(message)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for_runner(self) -> None:
        runner = self._runner
        if runner is None:
            return
        if not runner.done():
            try:
                async with asyncio.timeout(self.close_timeout_s):
                    await asyncio.shield(runner)
            except TimeoutError:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                raise
        else:
            runner.result()

    async def _run_stream(self, stream: ClientConnection) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read_server(stream), name="twilio-caller-reader")
                tasks.create_task(self._pump_frames(), name="twilio-caller-frames")
                tasks.create_task(self._echo_due_marks(), name="twilio-caller-marks")
        finally:
            self._stream_closed.set()
            self._marks_changed.set()
            await self._notify()

    async def _read_server(self, stream: ClientConnection) -> None:
        try:
            async for message in stream:
                await self._on_server_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = stream.close_code
            self._stream_closed.set()
            self._marks_changed.set()
            await self._notify()

    async def _pump_frames(self) -> None:
        """Send one inbound frame and play one outbound frame every 20 ms, on a drift-free schedule."""
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        tick = 0
        while not self._stream_closed.is_set():
            delay_s = started_at + tick * FRAME_MS / 1000 - loop.time()
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await self._stream_closed.wait()
                if self._stream_closed.is_set():
                    return
            frame = self._next_caller_frame(loop.time())
            try:
                await self._send(self._sequenced({
                    "event": "media",
                    "media": {"track": "inbound", "chunk": str(tick + 1), "timestamp": str(tick * FRAME_MS),
                              "payload": base64.b64encode(frame).decode("ascii")},
                }))
            except ConnectionClosed:
                return
            self.caller_track.extend(frame)
            await self._play_frame()
            tick += 1
            await self._notify()

    def _next_caller_frame(self, now_s: float) -> bytes:
        if not self._outgoing:
            return bytes([MULAW_SILENCE]) * FRAME_BYTES
        frame = bytes(self._outgoing[:FRAME_BYTES]).ljust(FRAME_BYTES, bytes([MULAW_SILENCE]))
        del self._outgoing[:FRAME_BYTES]
        if any(b not in _SILENT_BYTES for b in frame):
            self._utterance_had_speech = True
            self._last_speech_frame_at_s = now_s
            self._since_last_speech = AgentTurn(speech_ended_at_s=now_s)
        if not self._outgoing and self._utterance_had_speech and self._since_last_speech is not None:
            # The agent may answer during the utterance's trailing silence: that counts for this turn.
            self.turns.append(self._since_last_speech)
            self._since_last_speech = None
            self._utterance_had_speech = False
        return frame

    def _position(self, now_s: float) -> float:
        """Bytes played by `now_s`: continuous at 8 bytes per ms from the clock, never past what was received."""
        if self._clock_bytes >= self._queued_total:
            return float(self._queued_total)
        return min(float(self._queued_total), self._clock_bytes + max(0.0, now_s - self._clock_at) * 8000.0)

    def _catch_up(self, now_s: float) -> None:
        """Move what has played by `now_s` from the buffer to `heard_mulaw` (and the turn's count)."""
        played_to = int(self._position(now_s))
        count = played_to - self._played_total
        if count <= 0:
            return
        played = bytes(self._playback[:count])
        del self._playback[:count]
        self._played_total = played_to
        self.heard_mulaw.extend(played)
        self._track_backlog.extend(played)
        for turn in self._current_turns():
            turn.played_mulaw_bytes += len(played)

    async def _play_frame(self) -> None:
        # One 20 ms frame of the recording: what played since the last frame (it stays aligned with the
        # caller's track; audio that played between two ticks lands in the next frame).
        self._catch_up(asyncio.get_running_loop().time())
        frame = bytes(self._track_backlog[:FRAME_BYTES])
        del self._track_backlog[:FRAME_BYTES]
        self.agent_track.extend(frame.ljust(FRAME_BYTES, bytes([MULAW_SILENCE])))

    async def _echo_due_marks(self) -> None:
        """Echo each mark the moment playback reaches it (Twilio: once the audio sent before it has played)."""
        loop = asyncio.get_running_loop()
        while not self._stream_closed.is_set():
            self._marks_changed.clear()
            if self._pending_marks:
                offset = self._pending_marks[0][0]
                due_at = self._clock_at + (offset - self._clock_bytes) / 8000.0
                if loop.time() >= due_at:
                    self._catch_up(loop.time())
                    _, name = self._pending_marks.pop(0)
                    await self._echo_mark(name)
                    await self._notify()
                    continue
                wait_s: float | None = due_at - loop.time()
            else:
                wait_s = None  # bounded: the stream's end sets the event too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._marks_changed.wait()

    def _current_turns(self) -> list[AgentTurn]:
        """The turn agent audio counts for: the utterance still trailing off, else the last one."""
        if self._since_last_speech is not None:
            return [self._since_last_speech]
        return self.turns[-1:]

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        with contextlib.suppress(ConnectionClosed):
            await self._send(self._sequenced({"event": "mark", "mark": {"name": name}}))

    async def _on_server_message(self, raw: str | bytes) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(raw, bytes):
            self.received.append(ReceivedMessage(loop.time(), raw.decode("utf-8", "replace")))
            self.protocol_errors.append("binary frame (Twilio expects JSON text frames)")
            await self._notify()
            return
        try:
            message = json.loads(raw)
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self.received.append(ReceivedMessage(loop.time(), raw))
            self.protocol_errors.append(f"not a JSON object: {raw[:80]!r}")
            await self._notify()
            return
        self.received.append(ReceivedMessage(loop.time(), message))
        error = self._check_server_message(message)
        if error is not None:
            self.protocol_errors.append(error)
        else:
            await self._apply(message, loop.time())
        await self._notify()

    def _check_server_message(self, message: JsonDict) -> str | None:
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            return f"unknown event {event!r}"
        if message.get("streamSid") != self.stream_sid:
            return f"{event}: streamSid {message.get('streamSid')!r} is not this stream's"
        if event == "media":
            payload = (message.get("media") or {}).get("payload")
            if not isinstance(payload, str):
                return "media: missing media.payload"
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return "media: payload is not base64"
        if event == "mark" and not isinstance((message.get("mark") or {}).get("name"), str):
            return "mark: missing mark.name"
        return None

    async def _apply(self, message: JsonDict, now_s: float) -> None:
        event = message["event"]
        if event == "media":
            audio = base64.b64decode(message["media"]["payload"])
            self._catch_up(now_s)
            if self._position(now_s) >= self._queued_total:
                # The buffer had run dry: playback starts again now, with this chunk.
                self._clock_bytes = self._queued_total
                self._clock_at = now_s
            self._media_spans.append(_MediaSpan(self._queued_total, self._queued_total + len(audio),
                                                message["media"]["payload"]))
            self._playback.extend(audio)
            self._queued_total += len(audio)
            for turn in self._current_turns():
                if turn.first_media_at_s is None:
                    turn.first_media_at_s = now_s
                turn.received_mulaw_bytes += len(audio)
        elif event == "mark":
            name = message["mark"]["name"]
            if self._position(now_s) >= self._queued_total:
                self._catch_up(now_s)
                await self._echo_mark(name)
            else:
                self._pending_marks.append((self._queued_total, name))
                self._marks_changed.set()
        else:
            # `clear` empties the buffer and echoes every pending mark at once.
            self._catch_up(now_s)
            self.clears += 1
            self.played_ms_at_clears.append(self._played_total / 8)
            self._playback.clear()
            self._queued_total = self._played_total
            self._clock_bytes = self._played_total
            for span in self._media_spans:
                span.end = max(span.start, min(span.end, self._played_total))
            pending, self._pending_marks = self._pending_marks, []
            self._marks_changed.set()
            for _, name in pending:
                await self._echo_mark(name)

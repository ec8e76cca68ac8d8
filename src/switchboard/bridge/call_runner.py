"""run_call(): one TaskGroup per call, with the adapters wired to the call core.

The runner reads, parses, calls `handle`, performs the returned actions and re-arms the deadline
timer. Every decision about call behaviour lives in the core; an `if` about behaviour here is a bug.
Performing actions never blocks: sends go into each socket's writer queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from switchboard.bridge.adapters.knowledge_client import CallProfile, KnowledgeClient
from switchboard.bridge.adapters.realtime_connection import RealtimeConnection
from switchboard.bridge.adapters.twilio_stream import TwilioStream
from switchboard.bridge.call.actions import (
    AppendCallerAudio,
    CallAction,
    ClearCallerPlayback,
    EndCall,
    FlushSpeech,
    PlayToCaller,
    ReconnectModel,
    RecordMessage,
    RecordUsage,
    SendPlaybackMark,
    SpeakText,
    StartToolCall,
    StopSpeech,
    TranscribeCallerAudio,
    TransferCall,
)
from switchboard.bridge.call.events import (
    CallerAudio,
    CallerHungUp,
    CallerPressedKey,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CallerTranscribed,
    CallEvent,
    DeadlineReached,
    GoodbyeRequested,
    ModelAudio,
    ModelDisconnected,
    ModelReconnectFailed,
    ModelResponseDone,
    ModelResponseStarted,
    PlaybackMarked,
    SpeechAudio,
    SpeechFailed,
    SpeechFinished,
    StreamStarted,
    ToolCallFinished,
    TransferFinished,
)
from switchboard.bridge.call.recent import RecentMap
from switchboard.bridge.call.state_machine import CallSettings, CallStateMachine
from switchboard.bridge.call_options import keypad_and_turn_settings
from switchboard.bridge.metrics import VoiceMetrics
from switchboard.bridge.observability import CallObserver, NullObserver, ObserverFactory
from switchboard.bridge.preopen import DeferredRecorder
from switchboard.bridge.timeline import TurnTimeline
from switchboard.bridge.wire.openai_realtime import (
    RealtimeProtocolError,
    encode_append,
    encode_realtime_action,
    parse_realtime_event,
)
from switchboard.bridge.wire.twilio_media import (
    StreamConnected,
    TwilioProtocolError,
    encode_clear,
    encode_mark,
    encode_media,
    parse_twilio_message,
)
from switchboard.clock import Clock, TimerHandle
from switchboard.config import VoiceSettings
from switchboard.errors import CallEnded, CallerGone, SwitchboardError, TenantNotFound, UpstreamError
from switchboard.logs import bind_call_context, get_logger, mask_phone, start_call_context
from switchboard.openai_models import DEFAULT_REALTIME_MODEL

log = get_logger("switchboard.call")


class ConversationRecorder(Protocol):
    """The App server outbox as the runner uses it (see adapters/tickets_client.py)."""

    def open_conversation_nowait(self, call_sid: str, *, tenant: str, caller: str, started_at: datetime,
                                 trace_id: str | None) -> None: ...

    def add_message_nowait(self, call_sid: str, *, message_id: str, role: str, text: str, at: datetime, seq: int,
                           name: str | None = None, arguments: dict[str, Any] | None = None,
                           result: str | None = None, duration_ms: float | None = None,
                           interrupted: bool = False) -> None: ...

    def end_conversation_nowait(self, call_sid: str, *, end_reason: str, ended_at: datetime, duration_s: float,
                                usage: dict[str, Any], turns: list[Any], summary: str | None = None) -> None: ...


class AppOutbox(ConversationRecorder, Protocol):
    """A recorder with a delivery loop: the App server outbox (adapters/tickets_client.py) as the voice
    app runs it (`run`, drained with `wait_until_idle`, `pending` as a gauge), plus `create_ticket`
    for the callback-ticket tool."""

    @property
    def pending(self) -> int: ...

    async def run(self) -> None: ...

    async def wait_until_idle(self, timeout_s: float) -> bool: ...

    async def create_ticket(
        self, *, call_sid: str, kind: str, phone_number: str, reason: str, requested_time: str | None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...

    def create_ticket_nowait(
        self, *, call_sid: str, kind: str, phone_number: str, reason: str, requested_time: str | None,
        idempotency_key: str,
    ) -> None: ...


ToolExecutor = Callable[["LiveCall", str, dict[str, Any]], "asyncio.Future[str] | Any"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the webhook (or the stream's custom parameters) told us about the call."""

    call_sid: str
    bot_profile_key: str
    caller_number: str
    is_sip_call: bool
    freshcaller_call_id: str | None = None
    # The base URL Twilio reaches this deployment at (PUBLIC_BASE_URL or the webhook's): for transfer callbacks.
    public_base_url: str = ""


@dataclass(slots=True)
class CallDependencies:
    settings: VoiceSettings
    clock: Clock
    knowledge: KnowledgeClient
    metrics: VoiceMetrics
    recorder: ConversationRecorder | None = None
    tools: Any = None  # a ToolRunner (bridge/tools.py) or None
    call_control: Any = None  # a TwilioCallControl (adapters/twilio_rest.py) or None
    thinking_sound: tuple[str, ...] = ()
    observer_factory: ObserverFactory = NullObserver
    http: Any = None  # a shared httpx.AsyncClient for vendor HTTP APIs (transcription)
    price_table: Any = None  # switchboard.pricing.PriceTable
    model_name: tuple[str, str] = ("openai", DEFAULT_REALTIME_MODEL)  # (vendor, model) as the price table names them
    coordinator: Any = None  # a CallCoordinator (bridge/scale_out.py): one end and one charge per call


@dataclass(slots=True)
class CallTimings:
    stream_started_at: float | None = None
    first_audio_sent_at: float | None = None
    model_connected_at: float | None = None
    created_at: float = 0.0


class LiveCall:
    """One call from webhook (or stream) to hang-up. `run()` owns its TaskGroup."""

    def __init__(self, context: CallContext, deps: CallDependencies, *, preopened: bool = False) -> None:
        """`preopened`: opened at the webhook, before its stream; it records nothing until the stream
        attaches here (bridge/preopen.py)."""
        self.context = context
        self.deps = deps
        self.preopened = preopened
        self.has_stream = False
        self._recorder: ConversationRecorder | None = (
            DeferredRecorder(deps.recorder) if preopened and deps.recorder is not None else deps.recorder
        )
        self.core: CallStateMachine | None = None
        self.profile: CallProfile | None = None
        self.model: RealtimeConnection | None = None
        self.twilio: TwilioStream | None = None
        self._stream_attached: asyncio.Future[tuple[TwilioStream, StreamStarted]] = (
            asyncio.get_running_loop().create_future()
        )
        self.finished = asyncio.Event()
        self._core_ready = asyncio.Event()
        self._ended = asyncio.Event()
        self._end_reason: str | None = None
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._bad_frames: dict[str, int] = {}
        # The stream's sequenceNumber of the last key press: increasing per stream, so one not above it is a repeat.
        self._last_key_sequence: int | None = None
        self.timings = CallTimings(created_at=deps.clock.now())
        self.timeline = TurnTimeline()
        self.observer: CallObserver = deps.observer_factory()
        self._trace_id: str | None = None
        self.tts: Any = None  # ElevenLabsConnection while the call speaks through ElevenLabs
        self._tts_contexts: set[str] = set()
        self.transcriber: Any = None
        self._response_started_at: dict[str, float] = {}
        self._started_wall: datetime = deps.clock.wall()
        # The last lines only: enough for the hand-over summary; the full record is at the App server.
        self._transcript: RecentMap[str, tuple[str, str]] = RecentMap(32)
        self._transferred_to: str | None = None
        self._hand_over_summary: str | None = None

    # ------------------------------------------------------------------ entry points
    def attach_stream(self, twilio: TwilioStream, start: StreamStarted) -> bool:
        """Hand Twilio's stream to a pre-opened call. False if the call already has one or is over."""
        if self._stream_attached.done() or self._ended.is_set():
            return False
        self.has_stream = True
        self._stream_attached.set_result((twilio, start))
        return True

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    def request_goodbye(self, reason: str) -> None:
        """Ask the call to say a short goodbye and end (drain timeout); plain def, runs on the loop."""
        self._feed(GoodbyeRequested(reason))

    def request_end(self, reason: str) -> None:
        """End the call from outside (shutdown); its tasks finish and its peers close."""
        self._end(reason)

    async def run(self) -> None:
        """Run the call to its end. Never raises for call-level failures; they end the call."""
        start_call_context(call_sid=self.context.call_sid, tenant=self.context.bot_profile_key)
        settings = self.deps.settings
        metrics = self.deps.metrics
        metrics.live_calls.inc()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._supervise(), name="call-supervisor")
                tasks.create_task(self._connect_and_run_model(tasks), name="realtime-setup")
                tasks.create_task(self._wait_for_stream(tasks), name="twilio-setup")
        except* CallEnded:
            pass
        except* CallerGone:
            self._end_reason = self._end_reason or "caller_hung_up"
        except* SwitchboardError as group:
            self._end_reason = self._end_reason or "error"
            log.error("call.failed", error=type(group.exceptions[0]).__name__, detail=str(group.exceptions[0]))
        except* Exception as group:
            self._end_reason = self._end_reason or "internal_error"
            log.exception("call.crashed", exc_info=group.exceptions[0])
        finally:
            self._tasks = None
            if self._timer is not None:
                self._timer.cancel()
            # Settled first (one short shared-state write): the end is decided before any peer sees the close.
            is_recorded = await self._settle_claim()
            await self._close_peers(settings.close_timeout_s)
            await self._complete_call()
            metrics.live_calls.dec()
            duration_s = self._finish_record(record_end=is_recorded)
            if self.core is not None and is_recorded:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.http_timeout_s * 3):
                        await self._charge(duration_s)
            self.finished.set()

    async def _settle_claim(self) -> bool:
        """Whether this call's end is recorded and charged here: only a call whose stream came here, and
        (with several voice servers) only if no sweeper has already ended it as lost. A pre-opened session
        whose stream never came leaves no trace: no record, no charge, its claim freed."""
        coordinator = self.deps.coordinator
        if not self.has_stream:
            if isinstance(self._recorder, DeferredRecorder):
                self._recorder.discard()
            if self.preopened:
                self.deps.metrics.preopen_sessions.labels(outcome="unused").inc()
            if coordinator is not None:
                await coordinator.preopen_unused(self.context.call_sid)
            return False
        if coordinator is None:
            return True
        return bool(await coordinator.call_ended(self.context.call_sid, end_reason=self._end_reason or "ended",
                                                 duration_s=self._duration_s()))

    def _duration_s(self) -> float:
        started = self.timings.stream_started_at
        return self.deps.clock.now() - started if started is not None else 0.0

    # ------------------------------------------------------------------ set-up
    async def _connect_and_run_model(self, tasks: asyncio.TaskGroup) -> None:
        settings = self.deps.settings
        ctx = self.context
        try:
            async with asyncio.timeout(settings.http_timeout_s * 2):
                self.profile = await self.deps.knowledge.call_profile_or_cached(
                    bot_profile_key=ctx.bot_profile_key, caller_number=ctx.caller_number,
                    is_sip_call=ctx.is_sip_call, call_sid=ctx.call_sid,
                )
                tools: list[dict[str, Any]] = []
                if self.deps.tools is not None:
                    tools = await self.deps.tools.schemas(self)
        except (TimeoutError, UpstreamError, TenantNotFound) as exc:
            # No profile, not even a cached one: Twilio apologises for us and the call ends.
            log.error("call.no_profile", error=type(exc).__name__)
            await self._redirect_with_apology(
                "Sorry, we can't take your call right now. Please try again in a few minutes. Goodbye.")
            self._end("ai_server_unavailable")
            return
        if self.profile.from_cache:
            log.warning("call.degraded_profile", reason="ai_server_unavailable")
        if not self.profile.has_credits:
            self._end("no_credits")
            return
        self.transcriber = self._build_transcriber(self.profile)
        use_tts = self._wants_external_tts(self.profile)
        self.core = CallStateMachine(self._call_settings(self.profile, tools, external_tts=use_tts),
                                     call_sid=ctx.call_sid)
        self._core_ready.set()
        if use_tts:
            # The TTS socket opens beside the model's, before the first response needs it.
            tasks.create_task(self._open_speech(tasks), name="tts-setup")
        if not await self._open_model(tasks):
            return
        self.timings.model_connected_at = self.deps.clock.now()
        self.deps.metrics.model_connect_seconds.observe(self.timings.model_connected_at - self.timings.created_at)
        self._trace_id = self.observer.call_started(
            call_sid=ctx.call_sid, tenant=ctx.bot_profile_key, caller_masked=mask_phone(ctx.caller_number),
            is_sip_call=ctx.is_sip_call,
        )
        if self._recorder is not None:
            self._recorder.open_conversation_nowait(
                ctx.call_sid, tenant=ctx.bot_profile_key, caller=ctx.caller_number, started_at=self._started_wall,
                trace_id=self._trace_id,
            )

    async def _open_model(self, tasks: asyncio.TaskGroup) -> bool:
        """Open a model session, retrying with backoff within the reconnect window.

        On success the new connection's reader and writer run in the call's TaskGroup; on failure the
        core hears ModelReconnectFailed (it apologises and hands the caller over) and this returns False.
        """
        settings = self.deps.settings
        clock = self.deps.clock
        give_up_at = clock.now() + settings.model_reconnect_window_s
        delay_s = 0.2
        while True:
            try:
                connection = await RealtimeConnection.open(
                    settings.realtime_url, model=settings.openai_realtime_model, api_key=settings.openai_api_key,
                    connect_timeout_s=max(0.5, min(settings.realtime_connect_timeout_s,
                                                   give_up_at - clock.now() + 0.5)),
                )
            except UpstreamError as exc:
                log.warning("realtime.connect_failed", error=type(exc).__name__, retryable=exc.retryable)
                if not exc.retryable or clock.now() + delay_s >= give_up_at:
                    self._feed(ModelReconnectFailed(fatal=not exc.retryable))
                    return False
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)
                continue
            self.model = connection
            tasks.create_task(self._read_model(connection), name="realtime-reader")
            return True

    async def _reconnect(self) -> None:
        old = self.model
        self.model = None
        if old is not None:
            with contextlib.suppress(TimeoutError, OSError, RuntimeError):
                async with asyncio.timeout(self.deps.settings.close_timeout_s):
                    await old.close()
        self.deps.metrics.model_reconnects.inc()
        log.warning("realtime.reconnecting")
        if self._tasks is not None and await self._open_model(self._tasks):
            log.info("realtime.reconnected")

    async def _wait_for_stream(self, tasks: asyncio.TaskGroup) -> None:
        try:
            async with asyncio.timeout(self.deps.settings.preopen_claim_timeout_s):
                twilio, start = await self._stream_attached
        except TimeoutError:
            self._end("stream_never_arrived")
            return
        self.twilio = twilio
        if isinstance(self._recorder, DeferredRecorder):
            self._recorder.release()
        bind_call_context(stream_sid=start.stream_sid)
        tasks.create_task(twilio.run_writer(), name="twilio-writer")
        # The start may arrive before the call profile is in; the core is created from the profile.
        await self._core_ready.wait()
        self.timings.stream_started_at = self.deps.clock.now()
        self.timeline.stream_started(self.timings.stream_started_at)
        log.info("call.started", caller=mask_phone(self.context.caller_number), sip=self.context.is_sip_call)
        self._feed(start)
        tasks.create_task(self._read_twilio(twilio), name="twilio-reader")

    def _wants_external_tts(self, profile: CallProfile) -> bool:
        voice = profile.voice
        if voice.get("provider") != "elevenlabs":
            return False
        if not self.deps.settings.elevenlabs_api_key or not voice.get("voice_id"):
            log.warning("tts.unavailable", reason="ELEVENLABS_API_KEY or voice_id missing; using the model's voice")
            return False
        return True

    def _build_transcriber(self, profile: CallProfile) -> Any:
        s = self.deps.settings
        if self.deps.http is None:
            return None
        if profile.transcriber == "cartesia" and s.cartesia_api_key:
            from switchboard.bridge.adapters.transcribers import CartesiaTranscriber

            return CartesiaTranscriber(s.cartesia_base_url, s.cartesia_api_key, self.deps.http,
                                       timeout_s=s.transcription_timeout_s)
        if profile.transcriber == "elevenlabs" and s.elevenlabs_api_key:
            from switchboard.bridge.adapters.transcribers import ScribeTranscriber

            return ScribeTranscriber(s.elevenlabs_base_url, s.elevenlabs_api_key, self.deps.http,
                                     timeout_s=s.transcription_timeout_s)
        if profile.transcriber not in ("none", "openai", ""):
            log.warning("transcriber.unavailable", transcriber=profile.transcriber)
        return None

    async def _open_speech(self, tasks: asyncio.TaskGroup) -> None:
        """Open (or reopen) the ElevenLabs socket; on failure the core falls back to the model's voice."""
        from switchboard.bridge.adapters.elevenlabs_connection import ElevenLabsConnection

        s = self.deps.settings
        voice = self.profile.voice if self.profile is not None else {}
        try:
            connection = await ElevenLabsConnection.open(
                s.elevenlabs_base_url, s.elevenlabs_api_key or "", str(voice.get("voice_id")),
                str(voice.get("model") or "eleven_flash_v2_5"), connect_timeout_s=s.realtime_connect_timeout_s,
            )
        except UpstreamError as exc:
            log.warning("tts.failed", error=type(exc).__name__, fallback="model_voice")
            self._feed(SpeechFailed("connect_failed"))
            return
        self.tts = connection
        self._tts_contexts = set()
        tasks.create_task(connection.run_writer(), name="tts-writer")
        tasks.create_task(self._read_speech(connection), name="tts-reader")

    async def _read_speech(self, connection: Any) -> None:
        from switchboard.bridge.wire.elevenlabs_tts import (
            TtsAudio,
            TtsContextFinal,
            TtsError,
            encode_close_context,
        )

        try:
            async for event in connection.events():
                if isinstance(event, TtsAudio):
                    alignment = event.alignment
                    self._feed(SpeechAudio(
                        context_id=event.context_id, payload=event.payload,
                        chars=alignment.chars if alignment else (),
                        char_start_ms=alignment.start_ms if alignment else (),
                    ))
                elif isinstance(event, TtsContextFinal):
                    self._feed(SpeechFinished(event.context_id))
                    # ElevenLabs allows 5 open contexts per socket: close each one once it is done.
                    if event.context_id in self._tts_contexts:
                        self._tts_contexts.discard(event.context_id)
                        with contextlib.suppress(UpstreamError):
                            connection.send_nowait(encode_close_context(event.context_id))
                elif isinstance(event, TtsError):
                    log.warning("tts.failed", error="tts_error_message", fallback="model_voice")
                    self.tts = None
                    self._feed(SpeechFailed("error_message"))
                    return
        except UpstreamError as exc:
            log.warning("tts.failed", error=type(exc).__name__, fallback="model_voice")
            self.tts = None
            self._feed(SpeechFailed("protocol_error"))
            return
        if self.tts is connection and not self._ended.is_set():
            log.warning("tts.failed", error="socket_closed", fallback="model_voice")
            self.tts = None
            self._feed(SpeechFailed("socket_closed"))

    def _perform_speech(self, action: CallAction) -> None:
        from switchboard.bridge.wire.elevenlabs_tts import (
            encode_close_context,
            encode_flush,
            encode_init_context,
            encode_text,
        )

        tts = self.tts
        if tts is None:
            return
        try:
            if isinstance(action, SpeakText):
                if action.context_id not in self._tts_contexts:
                    self._tts_contexts.add(action.context_id)
                    speed = float(self.profile.voice.get("speed") or 1.0) if self.profile is not None else 1.0
                    tts.send_nowait(encode_init_context(action.context_id, speed=speed))
                if action.text.strip():
                    tts.send_nowait(encode_text(action.context_id, action.text))
            elif isinstance(action, FlushSpeech):
                if action.context_id in self._tts_contexts:
                    tts.send_nowait(encode_flush(action.context_id))
            elif isinstance(action, StopSpeech) and action.context_id in self._tts_contexts:
                tts.send_nowait(encode_close_context(action.context_id))
        except UpstreamError:
            self.tts = None
            self._feed(SpeechFailed("send_queue_full"))

    async def _transcribe(self, action: TranscribeCallerAudio) -> None:
        """Off the critical path: the caller's turn for the record; a failure is recorded, never raised."""
        import base64
        import binascii

        text = "[transcription failed]"
        transcriber = self.transcriber
        if transcriber is not None:
            try:
                mulaw = base64.b64decode(action.audio, validate=True)
                async with asyncio.timeout(self.deps.settings.transcription_timeout_s + 1.0):
                    text = (await transcriber.transcribe_mulaw(mulaw)).strip() or "[inaudible]"
            except (binascii.Error, ValueError, TimeoutError, UpstreamError) as exc:
                log.warning("transcription.failed", transcriber=getattr(transcriber, "name", "?"),
                            error=type(exc).__name__)
        self._feed(CallerTranscribed(item_id=action.item_id, transcript=text))

    def _call_settings(self, profile: CallProfile, tools: list[dict[str, Any]], *,
                       external_tts: bool = False) -> CallSettings:
        s = self.deps.settings
        voice = profile.voice
        return CallSettings(
            external_tts=external_tts,
            transcribe_caller_audio=self.transcriber is not None,
            # `transcriber: openai` asks the Realtime session for its own input transcription.
            transcription_model=s.transcription_model if profile.transcriber == "openai" else None,
            instructions=profile.instructions,
            greeting=profile.greeting,
            voice=str(voice.get("name") or "marin"),
            speed=float(voice.get("speed") or 1.0),
            tools=tuple(tools),
            playback_lead_ms=float(s.playback_lead_ms),
            mark_interval_ms=s.mark_interval_ms,
            inactivity_prompt_s=s.inactivity_prompt_s,
            inactivity_hangup_s=s.inactivity_hangup_s,
            max_call_s=s.max_call_s,
            wrap_up_s=s.wrap_up_s,
            thinking_delay_s=s.thinking_delay_ms / 1000.0,
            thinking_interval_s=s.thinking_interval_s,
            tool_timeout_s=s.tool_timeout_s,
            thinking_sound=self.deps.thinking_sound,
            model_session_max_s=s.model_session_max_s,
            transfer_number=(profile.transfer or {}).get("number") or None,
            # Caller ID: the tenant's number for SIP calls, the original caller's for PSTN (contract §5).
            transfer_caller_id=(
                (profile.transfer or {}).get("caller_id") if self.context.is_sip_call else self.context.caller_number
            ) or None,
            **keypad_and_turn_settings(profile.extra, dtmf_pause_ms=s.dtmf_pause_ms),
        )

    # ------------------------------------------------------------------ readers
    async def _read_twilio(self, twilio: TwilioStream) -> None:
        await twilio.run_reader(self._on_twilio_text)
        for frame_kind, count in (("binary", twilio.binary_frames), ("oversized", twilio.oversized_frames)):
            if count:
                self._bad_frames[f"twilio:{frame_kind}"] = count
        self._feed(CallerHungUp())

    def _on_twilio_text(self, text: str) -> None:
        """One Twilio message (synchronously, as it arrives): parse it and drive the core."""
        try:
            event = parse_twilio_message(text)
        except TwilioProtocolError as exc:
            self._count_bad_frame("twilio", exc.kind)
            return
        kind = type(event)
        if kind is CallerAudio:
            self._feed_caller_audio(cast(CallerAudio, event))
            return
        if kind is PlaybackMarked:
            self.timeline.mark_played(cast(PlaybackMarked, event).name, self.deps.clock.now())
        elif kind is CallerPressedKey:
            sequence = cast(CallerPressedKey, event).sequence_number
            if sequence is not None:
                if self._last_key_sequence is not None and sequence <= self._last_key_sequence:
                    # The same `dtmf` again (a duplicate delivery): not a second press, no second barge-in.
                    self._count_bad_frame("twilio", "duplicate_dtmf")
                    return
                self._last_key_sequence = sequence
            # A key interrupts as speech does: its reaction (dtmf read -> clear written) is a barge-in's.
            self.timeline.caller_started_speaking(self.deps.clock.now())
        elif kind is StreamStarted:
            self._count_bad_frame("twilio", "second_start")
            return
        elif kind is StreamConnected:
            return
        # StreamConnected and StreamStarted were skipped above: what is left is a CallEvent.
        self._feed(cast(CallEvent, event))

    async def _read_model(self, model: RealtimeConnection) -> None:
        """Feed one connection's events; when it closes, tell the core (unless it was replaced)."""
        await model.run_reader(self._on_model_message)
        if self.model is model:
            self._feed(ModelDisconnected("socket closed"))

    def _on_model_message(self, message: str | bytes) -> None:
        """One model message (synchronously, as it arrives): parse it and drive the core."""
        received_at = self.deps.clock.now()
        try:
            event = parse_realtime_event(message)
        except RealtimeProtocolError as exc:
            self._count_bad_frame("realtime", exc.kind)
            return
        if event is None:
            return
        self._observe_model_event(event, received_at)
        self._feed(event)

    # ------------------------------------------------------------------ core driving
    def _feed(self, event: CallEvent) -> None:
        core = self.core
        if core is None or self._ended.is_set():
            return
        now = self.deps.clock.now()
        actions = core.handle(event, now)
        if actions:
            self._perform(actions, now)
        self._rearm(core)

    def _feed_caller_audio(self, event: CallerAudio) -> None:
        """The per-frame path: one core call, one queue put, no timer work (caller audio moves no deadline)."""
        core = self.core
        if core is None or self._ended.is_set():
            return
        now = self.deps.clock.now()
        actions = core.handle(event, now)
        model = self.model
        if len(actions) == 1 and type(actions[0]) is AppendCallerAudio and model is not None:
            try:
                model.send_nowait(encode_append(event.payload))
            except UpstreamError:
                self._end("model_stalled")
            return
        if actions:
            self._perform(actions, now)
        self._rearm(core)

    def _perform(self, actions: list[CallAction], now: float) -> None:
        twilio = self.twilio
        model = self.model
        try:
            for action in actions:
                kind = type(action)
                if kind is PlayToCaller:
                    if twilio is not None and self.core is not None and self.core.stream_sid:
                        twilio.send_nowait(encode_media(self.core.stream_sid, cast(PlayToCaller, action)))
                elif kind is SendPlaybackMark:
                    if twilio is not None and self.core is not None and self.core.stream_sid:
                        mark = cast(SendPlaybackMark, action)
                        twilio.send_nowait(encode_mark(self.core.stream_sid, mark))
                        self.timeline.media_sent(now, mark.name)
                elif kind is ClearCallerPlayback:
                    if twilio is not None and self.core is not None and self.core.stream_sid:
                        twilio.send_nowait(encode_clear(self.core.stream_sid))
                        self.deps.metrics.barge_ins.inc()
                        self.timeline.clear_sent(now)
                elif kind is StartToolCall:
                    self._start_tool(cast(StartToolCall, action))
                elif kind is RecordMessage:
                    self._record(cast(RecordMessage, action))
                elif kind is RecordUsage:
                    continue
                elif kind is SpeakText or kind is FlushSpeech or kind is StopSpeech:
                    self._perform_speech(action)
                elif kind is TranscribeCallerAudio:
                    if self._tasks is not None:
                        self._tasks.create_task(
                            self._transcribe(cast(TranscribeCallerAudio, action)), name="transcription"
                        )
                elif kind is ReconnectModel:
                    if self._tasks is not None:
                        self._tasks.create_task(self._reconnect(), name="realtime-reconnect")
                elif kind is TransferCall:
                    self._start_transfer(cast(TransferCall, action))
                elif kind is EndCall:
                    self._end(cast(EndCall, action).reason)
                else:
                    text = encode_realtime_action(action)
                    if text is not None and model is not None:
                        model.send_nowait(text)
        except CallerGone:
            self._end("caller_stream_stalled")
        except UpstreamError:
            self._end("model_stalled")

    def _rearm(self, core: CallStateMachine) -> None:
        deadline = core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.deps.clock.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._feed(DeadlineReached())

    # ------------------------------------------------------------------ tools and records
    def _start_tool(self, action: StartToolCall) -> None:
        if self._tasks is None:
            return
        self._tasks.create_task(self._run_tool(action), name=f"tool-{action.name}")

    async def _run_tool(self, action: StartToolCall) -> None:
        started = self.deps.clock.now()
        ok = True
        try:
            arguments = json.loads(action.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError:
            arguments = None
        if arguments is None:
            output = json.dumps({"ok": False, "error": "invalid_arguments"})
            ok = False
        elif self.deps.tools is None:
            output = json.dumps({"ok": False, "error": "tools_unavailable"})
            ok = False
        else:
            try:
                # The core answers the model with a timeout result at tool_timeout_s; this bound only
                # stops the task itself from outliving that.
                async with asyncio.timeout(self.deps.settings.tool_timeout_s + 1.0):
                    output = await self.deps.tools.run(self, action.name, arguments)
            except TimeoutError:
                output = json.dumps({"ok": False, "error": "timeout"})
                ok = False
            except SwitchboardError as exc:
                output = json.dumps({"ok": False, "error": type(exc).__name__})
                ok = False
        duration_ms = (self.deps.clock.now() - started) * 1000.0
        self.observer.tool_finished(name=action.name, arguments=action.arguments, result=output,
                                    duration_ms=duration_ms, ok=ok)
        self.deps.metrics.tool_calls.labels(tool=action.name, outcome="ok" if ok else "error").inc()
        self.deps.metrics.tool_seconds.labels(tool=action.name).observe(duration_ms / 1000.0)
        log.info("tool_call.finished", tool=action.name, duration_ms=round(duration_ms, 1), status="ok" if ok else "error")
        self._feed(ToolCallFinished(call_id=action.call_id, output=output, ok=ok))

    def _start_transfer(self, action: TransferCall) -> None:
        if self._tasks is None:
            return
        self._transferred_to = action.number
        self._tasks.create_task(self._transfer(action), name="transfer")

    async def _transfer(self, action: TransferCall) -> None:
        from switchboard.bridge.twiml import apology_twiml

        control = self.deps.call_control
        ok = False
        if action.number is None:
            # No human to hand over to: leave a callback ticket, then Twilio speaks the apology and hangs up.
            await self._leave_callback_ticket("The AI agent was unavailable during the call.")
            twiml = apology_twiml(action.apology or "Sorry, we have to end this call. Goodbye.")
        else:
            twiml = self._transfer_twiml(action)
        if control is None:
            log.error("transfer.failed", reason="twilio_rest_not_configured")
        else:
            try:
                async with asyncio.timeout(self.deps.settings.http_timeout_s * 2):
                    await control.redirect(self.context.call_sid, twiml)
                ok = True
                log.info("transfer.requested", to=mask_phone(action.number) if action.number else "hangup")
            except (TimeoutError, UpstreamError) as exc:
                log.error("transfer.failed", error=type(exc).__name__)
        self._feed(TransferFinished(ok=ok))

    def _transfer_twiml(self, action: TransferCall) -> str:
        """A warm transfer `<Dial>` (whisper and action callbacks) when the public URL is known, else a plain one."""
        from switchboard.bridge.twiml import dial_twiml
        from switchboard.bridge.warm_transfer import (
            DEFAULT_DIAL_TIMEOUT_S,
            HandOver,
            HandOverTokens,
            transfer_twiml,
        )

        settings = self.deps.settings
        base_url = (settings.public_base_url or self.context.public_base_url).rstrip("/")
        assert action.number is not None
        summary = action.summary or self._summary()
        self._hand_over_summary = summary
        if not base_url:
            log.warning("transfer.not_warm", reason="public_base_url_unknown")
            return dial_twiml(action.number, action.caller_id, action.apology)
        hand_over = HandOver(
            call_sid=self.context.call_sid, tenant=self.context.bot_profile_key,
            company=self.profile.company if self.profile is not None else "",
            caller_number=self.context.caller_number, reason=action.reason or "The caller asked for a person.",
            summary=summary, message_id=action.message_id or "", seq=action.seq or 0,
        )
        timeout_s = (self.profile.transfer or {}).get("timeout_s") if self.profile is not None else None
        return transfer_twiml(
            HandOverTokens(settings.switchboard_service_token), hand_over, base_url=base_url, number=action.number,
            caller_id=action.caller_id, timeout_s=int(timeout_s or DEFAULT_DIAL_TIMEOUT_S), apology=action.apology,
            now_s=self.deps.clock.wall().timestamp(),
        )

    async def _redirect_with_apology(self, sentence: str) -> None:
        from switchboard.bridge.twiml import apology_twiml

        control = self.deps.call_control
        if control is None:
            return
        try:
            async with asyncio.timeout(self.deps.settings.http_timeout_s):
                await control.redirect(self.context.call_sid, apology_twiml(sentence))
        except (TimeoutError, UpstreamError) as exc:
            log.error("call.apology_failed", error=type(exc).__name__)

    async def _charge(self, duration_s: float) -> None:
        """Charge the tenant's minutes once (the AI server is idempotent per call SID); bounded retries."""
        knowledge = self.deps.knowledge
        for attempt in range(3):
            try:
                charge = await knowledge.charge_call(
                    bot_profile_key=self.context.bot_profile_key, call_sid=self.context.call_sid,
                    duration_s=duration_s, timeout_s=self.deps.settings.http_timeout_s,
                )
                log.info("call.charged", minutes=charge.get("minutes"), credits_remaining=charge.get("credits_remaining"))
                return
            except TenantNotFound:
                return
            except UpstreamError as exc:
                if not exc.retryable or attempt == 2:
                    log.error("call.charge_failed", error=type(exc).__name__)
                    return
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _leave_callback_ticket(self, reason: str) -> None:
        recorder = self.deps.recorder
        if recorder is None or not hasattr(recorder, "create_ticket") or not self.context.caller_number:
            return
        fields: dict[str, Any] = {
            "call_sid": self.context.call_sid, "kind": "callback", "phone_number": self.context.caller_number,
            "reason": reason, "requested_time": None,
            "idempotency_key": f"{self.context.call_sid}:model-unavailable-callback"}
        try:
            async with asyncio.timeout(self.deps.settings.http_timeout_s * 2):
                await recorder.create_ticket(**fields)
        except (TimeoutError, SwitchboardError) as exc:
            if (isinstance(exc, TimeoutError) or getattr(exc, "retryable", False)) and hasattr(
                    recorder, "create_ticket_nowait"):
                # The App server is down too: the durable outbox delivers it once it is back.
                recorder.create_ticket_nowait(**fields)
                log.warning("callback_ticket.queued", error=type(exc).__name__)
            else:
                log.error("callback_ticket.failed", error=type(exc).__name__)

    def _summary(self) -> str:
        """A short hand-over note for the human agent: the last lines of the conversation."""
        lines = [f"{'Caller' if role == 'user' else 'Agent'}: {text}" for role, text in self._transcript.values()
                 if role in {"user", "assistant"} and text]
        return "\n".join(lines[-8:])

    def _record(self, action: RecordMessage) -> None:
        if action.role in {"user", "assistant"}:
            self._transcript[action.message_id] = (action.role, action.text)
        recorder = self._recorder
        if recorder is None:
            return
        arguments: dict[str, Any] | None = None
        if action.arguments is not None:
            try:
                parsed = json.loads(action.arguments)
                arguments = parsed if isinstance(parsed, dict) else {"value": parsed}
            except ValueError:
                arguments = {"raw": action.arguments}
        recorder.add_message_nowait(
            self.context.call_sid, message_id=f"{self.context.call_sid}:{action.message_id}", role=action.role,
            text=action.text, at=self.deps.clock.wall(), seq=action.seq, name=action.name, arguments=arguments,
            result=action.result, duration_ms=action.duration_ms, interrupted=action.interrupted,
        )

    # ------------------------------------------------------------------ latency bookkeeping
    def _observe_model_event(self, event: CallEvent, now: float) -> None:
        kind = type(event)
        if kind is ModelAudio:
            self.timeline.model_audio(now)
        elif kind is CallerStoppedSpeaking:
            self.timeline.caller_stopped_speaking(now)
        elif kind is CallerStartedSpeaking:
            self.timeline.caller_started_speaking(now)
        elif kind is ModelResponseStarted:
            self.timeline.response_started(now)
            self._response_started_at[cast(ModelResponseStarted, event).response_id] = now
        elif kind is ModelResponseDone:
            done = cast(ModelResponseDone, event)
            self.observer.response_done(
                response_id=done.response_id, status=done.status, usage=done.usage,
                started_at=self._response_started_at.pop(done.response_id, None), ended_at=now,
            )

    # ------------------------------------------------------------------ ending
    def _count_bad_frame(self, peer: str, kind: str) -> None:
        key = f"{peer}:{kind}"
        count = self._bad_frames.get(key, 0) + 1
        self._bad_frames[key] = count
        self.deps.metrics.bad_frames.labels(peer=peer, kind=kind).inc()
        if count == 1:
            log.warning("frame.rejected", peer=peer, kind=kind)

    def _end(self, reason: str) -> None:
        if self._end_reason is None:
            self._end_reason = reason
        self._ended.set()

    async def _supervise(self) -> None:
        await self._ended.wait()
        twilio = self.twilio
        if twilio is not None:
            # Let the last queued messages (a goodbye's final mark) leave before we close.
            with contextlib.suppress(TimeoutError):
                await twilio.wait_until_sent(self.deps.settings.close_timeout_s)
        raise CallEnded(self._end_reason or "ended")

    async def _close_peers(self, timeout_s: float) -> None:
        for peer in (self.twilio, self.model, self.tts):
            if peer is None:
                continue
            try:
                async with asyncio.timeout(timeout_s):
                    await peer.close()
            except TimeoutError:
                log.warning("call.close_timeout", peer=type(peer).__name__)
            except Exception as exc:  # a peer that fails to close must not stop the others closing
                log.warning("call.close_failed", peer=type(peer).__name__, error=type(exc).__name__)

    async def _complete_call(self) -> None:
        """Hang up through the REST API too when we ended the call (once; "already ended" is fine)."""
        control = self.deps.call_control
        if control is None or self._end_reason not in {"end_call", "inactivity", "max_duration"}:
            return
        try:
            async with asyncio.timeout(self.deps.settings.http_timeout_s):
                await control.complete(self.context.call_sid)
        except (TimeoutError, UpstreamError) as exc:
            log.warning("call.complete_failed", error=type(exc).__name__)

    def _finish_record(self, *, record_end: bool = True) -> float:
        clock = self.deps.clock
        reason = self._end_reason or "ended"
        stats = self.core.stats() if self.core is not None else None
        duration_s = self._duration_s()
        metrics = self.deps.metrics
        metrics.calls_ended.labels(reason=reason).inc()
        usage = dict(stats.usage) if stats else {}
        if stats is not None:
            metrics.caller_frames_dropped.inc(stats.caller_frames_dropped)
            metrics.model_audio_dropped_seconds.inc(stats.model_audio_dropped_ms / 1000.0)
        if usage and self.deps.price_table is not None:
            from switchboard.pricing import realtime_tokens

            vendor, model = self.deps.model_name
            cost = self.deps.price_table.realtime_cost(vendor, model, realtime_tokens(usage))
            if cost is not None:
                metrics.call_cost.labels(tenant=self.context.bot_profile_key).inc(cost.total)
        self.timeline.finish()
        self.deps.metrics.observe_timeline(self.timeline)
        self.observer.call_ended(end_reason=reason, duration_s=duration_s, usage=usage, timeline=self.timeline)
        log.info(
            "call.ended", end_reason=reason, duration_s=round(duration_s, 3),
            caller_frames=stats.caller_frames if stats else 0,
            caller_frames_dropped=stats.caller_frames_dropped if stats else 0,
            model_audio_ms=round(stats.model_audio_ms, 1) if stats else 0,
            model_audio_dropped_ms=round(stats.model_audio_dropped_ms, 1) if stats else 0,
            barge_ins=stats.barge_ins if stats else 0, tool_calls=stats.tool_calls if stats else 0,
            bad_frames=dict(self._bad_frames), latency=self.timeline.summary(),
            stream_sid=self.core.stream_sid if self.core is not None else None,
        )
        if self._recorder is not None and self.core is not None and record_end:
            self._recorder.end_conversation_nowait(
                self.context.call_sid, end_reason=reason, ended_at=clock.wall(), duration_s=round(duration_s, 3),
                usage=usage, turns=self.timeline.turns,
                summary=(self._hand_over_summary or self._summary()) if reason == "transferred" else None,
            )
        return duration_s

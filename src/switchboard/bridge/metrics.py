"""Prometheus metrics of the voice server. Labels never carry a phone number or a call SID."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard.bridge.timeline import SEGMENTS, TurnTimeline

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


class VoiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.live_calls = Gauge("switchboard_live_calls", "Calls in progress", registry=r)
        self.calls_ended = Counter("switchboard_calls_ended", "Calls ended, by end reason", ["reason"], registry=r)
        self.webhooks = Counter("switchboard_webhooks", "Incoming-call webhooks, by outcome", ["outcome"], registry=r)
        self.barge_ins = Counter("switchboard_barge_ins", "Caller barge-ins (clear sent)", registry=r)
        self.bad_frames = Counter(
            "switchboard_bad_frames", "Frames rejected, by peer and kind", ["peer", "kind"], registry=r
        )
        self.tool_calls = Counter("switchboard_tool_calls", "Tool calls by tool and outcome", ["tool", "outcome"],
                                  registry=r)
        self.tool_seconds = Histogram("switchboard_tool_seconds", "Tool call duration", ["tool"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.turn_seconds = Histogram(
            "switchboard_turn_first_audio_seconds", "Caller stopped speaking -> first agent audio sent to Twilio",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.greeting_seconds = Histogram(
            "switchboard_greeting_first_audio_seconds", "Stream start -> first greeting audio sent to Twilio",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.model_connect_seconds = Histogram(
            "switchboard_model_connect_seconds", "Call created -> model socket connected",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.model_reconnects = Counter("switchboard_model_reconnects", "Model sessions re-opened after a drop",
                                        registry=r)
        self.caller_frames_dropped = Counter(
            "switchboard_caller_frames_dropped", "Caller frames dropped (held too long while the model was away)",
            registry=r)
        self.model_audio_dropped_seconds = Counter(
            "switchboard_model_audio_dropped_seconds", "Model audio discarded (barge-in or cancelled responses)",
            registry=r)
        self.outbox_depth = Gauge("switchboard_outbox_depth", "Records waiting for the App server", registry=r)
        self.call_cost = Counter("switchboard_call_cost_usd", "Model cost of ended calls, by tenant", ["tenant"],
                                 registry=r)
        self.draining = Gauge("switchboard_draining", "1 once SIGTERM was received", registry=r)
        # Scale-out: hit = the stream reached the server that pre-opened its model session; miss = it reached
        # another one, which opened a fresh session; unused = a pre-opened session no stream claimed.
        self.preopen_sessions = Counter("switchboard_preopen_sessions", "Pre-opened model sessions, by outcome",
                                        ["outcome"], registry=r)
        self.streams_refused = Counter("switchboard_streams_refused", "Stream upgrades refused, by reason",
                                       ["reason"], registry=r)
        self.state_errors = Counter("switchboard_state_errors", "Shared-state operations that failed",
                                    ["operation"], registry=r)
        self.turn_segment_seconds = Histogram(
            "switchboard_turn_segment_seconds",
            "Caller stopped speaking -> each point of the answer (response, model audio, media sent, played)",
            ["segment"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.barge_in_reaction_seconds = Histogram(
            "switchboard_barge_in_reaction_seconds", "speech_started received -> Twilio clear sent",
            buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1), registry=r,
        )

    def observe_timeline(self, timeline: TurnTimeline) -> None:
        for turn in timeline.turns:
            for segment in SEGMENTS:
                value = turn.get(segment)
                if value is not None:
                    self.turn_segment_seconds.labels(segment=segment.removesuffix("_ms")).observe(value / 1000.0)
            media = turn.get("speech_stopped_to_media_sent_ms")
            if media is not None:
                self.turn_seconds.observe(media / 1000.0)
        for reaction_ms in timeline.barge_in_reactions_ms:
            self.barge_in_reaction_seconds.observe(reaction_ms / 1000.0)
        if timeline.greeting_first_media_ms is not None:
            self.greeting_seconds.observe(timeline.greeting_first_media_ms / 1000.0)

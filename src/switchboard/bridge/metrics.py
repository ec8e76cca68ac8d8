"""Prometheus metrics of the voice server. Labels never carry a phone number or a call SID."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.draining = Gauge("switchboard_draining", "1 once SIGTERM was received", registry=r)

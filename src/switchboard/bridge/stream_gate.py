"""Who may open a Media Stream (contract §3): the upgrade's signature over exactly the URL Twilio dialed,
a URL this deployment issued and that has not expired, and a `start` naming the call the URL was issued
for. Every refusal happens before any model session is opened or used, and is counted by reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from switchboard.bridge.call.events import StreamStarted
from switchboard.bridge.metrics import VoiceMetrics
from switchboard.bridge.stream_urls import STREAM_PATH, StreamGrant, stream_base_url, verify_stream_path
from switchboard.bridge.twilio_signatures import TwilioSignatures
from switchboard.clock import Clock
from switchboard.config import VoiceSettings
from switchboard.logs import get_logger
from switchboard.url_tokens import TokenRejected

log = get_logger("switchboard.voice")


@dataclass(frozen=True, slots=True)
class UpgradeVerdict:
    """`grant` when the URL is ours and valid; else `refusal` says why (one of SIGNATURE_REFUSALS for
    Twilio's header, `not_issued`, `expired`, ...)."""

    grant: StreamGrant | None
    refusal: str | None = None


class StreamGate:
    def __init__(self, settings: VoiceSettings, signatures: TwilioSignatures, url_key: bytes, clock: Clock,
                 metrics: VoiceMetrics) -> None:
        self._settings = settings
        self._signatures = signatures
        self._url_key = url_key
        self._clock = clock
        self._metrics = metrics

    def refuse(self, reason: str, **fields: str) -> None:
        self._metrics.streams_refused.labels(reason=reason).inc()
        log.warning("stream.rejected", **{"reason": reason, **fields})

    def check_upgrade(self, public_base_url: str, path: str, headers: Mapping[str, str]) -> UpgradeVerdict:
        """The upgrade request of `path`, signed over `wss://<public host><path>` (scheme mapped)."""
        if self._settings.twilio_validate_signatures:
            url = stream_base_url(public_base_url) + path[len(STREAM_PATH):]
            check = self._signatures.check(url, {}, headers)
            if check.refusal is not None:
                self.refuse(**check.log_fields())
                return UpgradeVerdict(None, check.refusal)
        try:
            grant = verify_stream_path(self._url_key, path, now_s=self._clock.wall().timestamp())
        except TokenRejected as exc:
            # `bad_signature` here is a forged token, not Twilio's header: name it apart.
            reason = "forged_url" if exc.reason == "bad_signature" else exc.reason
            self.refuse(reason)
            return UpgradeVerdict(None, reason)
        return UpgradeVerdict(grant)

    def start_matches(self, grant: StreamGrant, start: StreamStarted) -> bool:
        """The `start` must name the call the URL was issued for (a replayed URL carries another's)."""
        if start.call_sid != grant.call_sid:
            self.refuse("call_mismatch")
            return False
        return True

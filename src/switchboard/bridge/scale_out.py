"""What makes several voice servers one: the voice server's side of the shared state (switchboard.state).

`CallCoordinator` claims each call SID once at the webhook (duplicates and busy tenants are answered
without a model session), marks which server holds a call's stream, ends each call once (the end that
wins records the call and charges it), renews this server's leases, and sweeps: calls of a server that
stopped renewing are recorded `server_lost` and charged by exactly one other server, and the outbox records
of a server that left or died are adopted and delivered. A failing state store never fails a call: the
coordinator logs it and lets the call through (availability over the concurrency limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from switchboard.bridge.metrics import VoiceMetrics
from switchboard.clock import Clock
from switchboard.config import VoiceSettings
from switchboard.errors import TenantNotFound, UpstreamError
from switchboard.logs import get_logger, mask_phone
from switchboard.state.sql_store import SqlVoiceState
from switchboard.state.store import Claim, LostCall, StateTimings, VoiceState

log = get_logger("switchboard.scale_out")

_STATE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


def state_timings(settings: VoiceSettings) -> StateTimings:
    """A lease outlives two missed heartbeats."""
    return StateTimings(heartbeat_s=settings.state_heartbeat_s, lease_s=settings.state_heartbeat_s * 3,
                        stream_url_ttl_s=settings.stream_url_ttl_s)


def build_voice_state(settings: VoiceSettings) -> SqlVoiceState:
    return SqlVoiceState.from_url(settings.switchboard_state_url, state_timings(settings))


@dataclass(slots=True)
class SweepHooks:
    """How a lost call is recorded and charged, and where adopted outbox records go."""

    record_lost: Callable[[LostCall], None]
    charge_lost: Callable[[LostCall], Any]  # -> awaitable
    adopt_records: Callable[[list[str]], None] | None = None


class CallCoordinator:
    def __init__(self, state: VoiceState, settings: VoiceSettings, clock: Clock, metrics: VoiceMetrics) -> None:
        self.state = state
        self.replica = settings.instance_id
        self._settings = settings
        self._clock = clock
        self._metrics = metrics

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.state_errors.labels(operation=operation).inc()
        log.error("state.failed", operation=operation, error=type(exc).__name__)

    async def claim(self, *, call_sid: str, tenant: str, caller: str, max_concurrent_calls: int | None,
                    credits: int | None) -> Claim:
        try:
            return await self.state.claim_call(
                call_sid=call_sid, tenant=tenant, caller=mask_phone(caller), replica=self.replica,
                max_concurrent_calls=max_concurrent_calls, credits=credits, now=self._clock.wall(),
            )
        except _STATE_ERRORS as exc:
            self._failed("claim", exc)
            return Claim("claimed", self.replica)

    async def attach(self, *, call_sid: str, tenant: str, caller: str) -> bool:
        try:
            return await self.state.attach_stream(call_sid=call_sid, tenant=tenant, caller=mask_phone(caller),
                                                  replica=self.replica, now=self._clock.wall())
        except _STATE_ERRORS as exc:
            self._failed("attach", exc)
            return True

    async def call_ended(self, call_sid: str, *, end_reason: str, duration_s: float) -> bool:
        """True when this end is the call's one end: record it and charge it."""
        try:
            return await self.state.end_call(call_sid=call_sid, replica=self.replica, now=self._clock.wall(),
                                             end_reason=end_reason, duration_s=duration_s)
        except _STATE_ERRORS as exc:
            self._failed("end", exc)
            return True  # the App server and the AI server are idempotent per call SID

    async def preopen_unused(self, call_sid: str) -> None:
        try:
            await self.state.release_unused(call_sid=call_sid, replica=self.replica, now=self._clock.wall())
        except _STATE_ERRORS as exc:
            self._failed("release", exc)

    async def leave(self) -> None:
        try:
            await self.state.leave(replica=self.replica, now=self._clock.wall())
        except _STATE_ERRORS as exc:
            self._failed("leave", exc)

    async def run(self, live_call_sids: Callable[[], Iterable[str]], hooks: SweepHooks) -> None:
        """Every heartbeat: renew this server's leases, adopt gone servers' outbox records, sweep lost
        calls. Runs until cancelled. Lost calls are charged in their own tasks, so a slow AI server never
        delays a renewal (this server's own leases would lapse)."""
        async with asyncio.TaskGroup() as charges:
            while True:
                try:
                    for lost in await self.beat(live_call_sids, hooks):
                        charges.create_task(hooks.charge_lost(lost), name="charge-lost-call")
                except _STATE_ERRORS as exc:
                    self._failed("heartbeat", exc)
                await asyncio.sleep(self._settings.state_heartbeat_s)

    async def beat(self, live_call_sids: Callable[[], Iterable[str]], hooks: SweepHooks) -> list[LostCall]:
        """One heartbeat; returns the lost calls it recorded (to be charged)."""
        now = self._clock.wall()
        await self.state.renew(replica=self.replica, call_sids=list(live_call_sids()), now=now)
        if hooks.adopt_records is not None:
            records = await self.state.spool_adopt(owner=self.replica, now=now)
            if records:
                log.info("state.outbox_adopted", record_count=len(records))
                hooks.adopt_records(records)
        lost_calls = await self.state.sweep_lost(now=now)
        for lost in lost_calls:
            self._metrics.calls_ended.labels(reason="server_lost").inc()
            log.warning("call.server_lost", call_sid=lost.call_sid, tenant=lost.tenant, holder=lost.holder,
                        duration_s=round(lost.duration_s, 3))
            hooks.record_lost(lost)
        return lost_calls


async def charge_once(knowledge: Any, *, tenant: str, call_sid: str, duration_s: float, timeout_s: float) -> None:
    """Charge a call's minutes (the AI server charges a call SID once); bounded retries, never raises."""
    for attempt in range(3):
        try:
            charge = await knowledge.charge_call(bot_profile_key=tenant, call_sid=call_sid, duration_s=duration_s,
                                                 timeout_s=timeout_s)
            log.info("call.charged", call_sid=call_sid, minutes=charge.get("minutes"),
                     credits_remaining=charge.get("credits_remaining"))
            return
        except TenantNotFound:
            return
        except UpstreamError as exc:
            if not exc.retryable or attempt == 2:
                log.error("call.charge_failed", call_sid=call_sid, error=type(exc).__name__)
                return
            await asyncio.sleep(0.5 * (attempt + 1))


def sweep_hooks(deps: Any, recorder: Any, adopt_records: Callable[[list[str]], None] | None = None) -> SweepHooks:
    """Record a lost call's end (`server_lost`) through this server's outbox and charge it once."""

    def record_lost(lost: LostCall) -> None:
        if recorder is None:
            return
        recorder.end_conversation_nowait(
            lost.call_sid, end_reason="server_lost", ended_at=deps.clock.wall(),
            duration_s=round(lost.duration_s, 3), usage={}, turns=[],
        )

    async def charge_lost(lost: LostCall) -> None:
        await charge_once(deps.knowledge, tenant=lost.tenant, call_sid=lost.call_sid, duration_s=lost.duration_s,
                          timeout_s=deps.settings.http_timeout_s)

    return SweepHooks(record_lost=record_lost, charge_lost=charge_lost, adopt_records=adopt_records)

"""The interface the voice server uses for state shared by every voice server of a deployment.

Plain data in and out; times are wall-clock `datetime`s the caller passes (the state crosses machines,
so it is never the monotonic clock). Every method is one short transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

ClaimOutcome = Literal["claimed", "duplicate", "busy", "no_credits"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The webhook's claim on a call SID. `holder`: the voice server that claimed it first."""

    outcome: ClaimOutcome
    holder: str


@dataclass(frozen=True, slots=True)
class LostCall:
    """A live call whose voice server stopped renewing its lease (killed, or cut off)."""

    call_sid: str
    tenant: str
    caller: str
    holder: str
    started_at: datetime
    duration_s: float


@dataclass(frozen=True, slots=True)
class StateTimings:
    """How long leases last. A live call's lease is renewed every `heartbeat_s`; it lapses after
    `lease_s` without one. A claim without a stream yet lasts as long as its stream URL is valid."""

    heartbeat_s: float
    lease_s: float
    stream_url_ttl_s: float


class VoiceState(Protocol):
    async def start(self) -> None:
        """Create or upgrade the schema (idempotent) and open the pool."""

    async def aclose(self) -> None: ...

    async def claim_call(self, *, call_sid: str, tenant: str, caller: str, replica: str,
                         max_concurrent_calls: int | None, credits: int | None, now: datetime) -> Claim:
        """Claim a call SID for its webhook, once across the deployment.

        `duplicate` when any server claimed it before (a retried webhook); `busy` when the tenant already
        has `max_concurrent_calls` calls holding a lease; `no_credits` when every credit minute is
        reserved by a live call (each live call reserves one). Only `claimed` takes a lease.
        """

    async def attach_stream(self, *, call_sid: str, tenant: str, caller: str, replica: str, now: datetime) -> bool:
        """The call's stream arrived at `replica`, which now holds it. False when the call already has a
        stream or has ended: the upgrade must be refused."""

    async def renew(self, *, replica: str, call_sids: list[str], now: datetime) -> None:
        """Heartbeat: extend the leases of the live calls `replica` holds, and record that it is up."""

    async def release_unused(self, *, call_sid: str, replica: str, now: datetime) -> None:
        """A pre-opened session whose stream never came here: free the claim unless another server
        has the stream. Never touches a call that went live."""

    async def end_call(self, *, call_sid: str, replica: str, now: datetime, end_reason: str,
                       duration_s: float) -> bool:
        """Mark the live call ended and free its lease. True exactly once per call: the caller then
        records the end and settles the charge. False when a sweeper already ended it (`server_lost`)."""

    async def sweep_lost(self, *, now: datetime) -> list[LostCall]:
        """End the live calls whose lease lapsed (their server is gone): `server_lost`, lease freed.
        Each lost call is returned to exactly one sweeper, which records it and settles its charge.
        Lapsed claims that never got a stream are freed and not returned."""

    async def leave(self, *, replica: str, now: datetime) -> None:
        """`replica` is exiting cleanly: another server adopts its undelivered outbox records at once."""

    async def live_call_count(self, tenant: str, *, now: datetime) -> int: ...

    # The App server outbox's durable records (see bridge/adapters/shared_spool.py).
    async def spool_append(self, *, owner: str, records: list[tuple[str, str]]) -> None:
        """Add (item_id, record) pairs owned by `owner`; an item_id already stored is left as it is."""

    async def spool_done(self, *, item_ids: list[str]) -> None:
        """Delete acknowledged records."""

    async def spool_records(self, *, owner: str) -> list[str]:
        """`owner`'s records, oldest first."""

    async def spool_adopt(self, *, owner: str, now: datetime) -> list[str]:
        """Take over the records of voice servers that left or stopped heartbeating, oldest first;
        each record is adopted by one server only."""

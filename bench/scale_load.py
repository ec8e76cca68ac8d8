"""Cheap load for the scale-out bench: bench/loadgen.py's callers and fake model against a tests/scale cluster.

The `state` and `rolling` parts of bench/scale_out.py need hundreds of live calls with audio both ways. The
test harness's TwilioCaller and FakeRealtimeServer (one asyncio task per message, full protocol checks) are
right for tests but saturate one process at about 100 calls: the load generator, not the servers, was then
measured. loadgen's picows callbacks carry 200 calls on well under one core, and stamp every frame on one
clock (caller -> HAProxy -> voice server -> model, and back), so per-frame latency comes for free.

Calls come through HAProxy exactly as Twilio places them: the signed webhook on the public URL, then the
stream URL of the TwiML with the signature Twilio computes over it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from loadgen import FakeCaller, LoadGenerator, connect_caller, now_ns
from tests.bridge.harness import ACCOUNT_SID, AUTH_TOKEN
from tests.scale.cluster import ACME_NUMBER, Cluster
from twilio.request_validator import RequestValidator

HANG_UP_QUIET_S = 0.3  # the model stops talking this long before the caller hangs up (nothing left in flight)


class LoadgenModel:
    """loadgen's fake Realtime server in the place of the cluster's model (`realtime_url`, `async with`)."""

    def __init__(self, gen: LoadGenerator) -> None:
        self.gen = gen
        self.realtime_url = ""
        self.sessions: list[Any] = []

    async def __aenter__(self) -> LoadgenModel:
        port = await self.gen.start_model_server()
        self.realtime_url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.gen.stop_model_server()


@dataclass
class CallLoad:
    """The calls one bench run places through the cluster's load balancer, and what they saw."""

    deployment: Cluster
    gen: LoadGenerator
    http: httpx.AsyncClient
    run_tag: int
    live: list[FakeCaller] = field(default_factory=list)
    ended: list[FakeCaller] = field(default_factory=list)
    webhook_ms: list[tuple[float, float]] = field(default_factory=list)  # (sent at perf_counter s, ms)
    failures: dict[str, int] = field(default_factory=dict)
    placed: int = 0

    async def place(self) -> FakeCaller | None:
        """One call: the webhook (timed), then the stream. None (and counted) when it could not be set up."""
        index = self.placed
        self.placed += 1
        call_sid = f"CA{self.run_tag:08x}{index:024x}"
        stream_sid = f"MZ{self.run_tag:08x}{index:024x}"
        validator = RequestValidator(AUTH_TOKEN)
        url = self.deployment.public_url + "/twilio-voice-webhook"
        form = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": f"+1555{7000000 + index:07d}",
                "To": ACME_NUMBER, "Direction": "inbound", "CallStatus": "ringing"}
        try:
            sent = time.perf_counter()
            answer = await self.http.post(url, data=form,
                                          headers={"X-Twilio-Signature": validator.compute_signature(url, form)})
            self.webhook_ms.append((sent, (time.perf_counter() - sent) * 1000))
            answer.raise_for_status()
            streams = re.findall(r'<Stream url="([^"]+)"', answer.text)
            if not streams:
                raise RuntimeError("no_stream_in_twiml")
            parameters = dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', answer.text))
            caller = FakeCaller(self.gen, index, call_sid, stream_sid, parameters)
            caller.webhook_done_ns = now_ns()  # type: ignore[attr-defined]
            await connect_caller(self.gen, streams[0], caller,
                                 {"X-Twilio-Signature": validator.compute_signature(streams[0], {})})
        except (httpx.HTTPError, OSError, TimeoutError, RuntimeError) as exc:
            reason = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
            self.failures[reason] = self.failures.get(reason, 0) + 1
            return None
        self.live.append(caller)
        return caller

    async def ramp(self, calls: int, per_s: float) -> None:
        """`calls` calls arriving at `per_s` a second; returns once each has its stream open."""
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(k: int) -> None:
            await asyncio.sleep(max(0.0, start + k / per_s - loop.time()))
            await self.place()

        async with asyncio.timeout(60 + calls / per_s), asyncio.TaskGroup() as group:
            for k in range(calls):
                group.create_task(one(k))

    async def hang_up(self, caller: FakeCaller) -> None:
        """As a caller who waits for the agent to finish: the model goes quiet, then the caller hangs up."""
        if caller in self.live:
            self.live.remove(caller)
        if caller.session is not None:
            caller.session.quiesce()
        await asyncio.sleep(HANG_UP_QUIET_S)
        caller.hang_up()
        self.ended.append(caller)

    async def replace_oldest(self) -> None:
        """Churn: the longest call ends and a new one arrives (through the webhook, as Twilio would)."""
        async with asyncio.TaskGroup() as group:
            if self.live:
                group.create_task(self.hang_up(self.live[0]))
            group.create_task(self.place())

    async def hang_up_all(self) -> None:
        async with asyncio.TaskGroup() as group:
            for caller in list(self.live):
                group.create_task(self.hang_up(caller))
        async with asyncio.timeout(15):
            while not all(c.closed for c in self.ended):  # noqa: ASYNC110 - picows callbacks set .closed
                await asyncio.sleep(0.05)

    def webhooks_between(self, start_s: float, end_s: float) -> list[float]:
        return [ms for sent, ms in self.webhook_ms if start_s <= sent < end_s]

    async def incomplete_records(self, timeout_s: float = 60.0) -> tuple[int, int, int]:
        """(records, messages lost, messages owed): ended calls whose App server record is missing or not ended by the caller,
        and answers the model completed on a call that are missing from its record (each completed answer owes
        one assistant message; interrupted ones are recorded as heard, which may be no word at all)."""
        incomplete = missing_messages = owed = 0
        for caller in self.ended:
            try:
                record = await self.deployment.wait_for_ended_record(caller.call_sid, timeout_s=timeout_s)
            except TimeoutError:
                incomplete += 1
                continue
            if record["end_reason"] != "caller_hung_up":
                incomplete += 1
            said = sum(1 for message in record["messages"] if message["role"] == "assistant")
            completed = caller.session.completed if caller.session is not None else 0
            owed += completed
            missing_messages += max(0, completed - said)
        return incomplete, missing_messages, owed

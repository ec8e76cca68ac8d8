"""AppServerOutbox against the real App server under uvicorn on 127.0.0.1 (a real socket, so an
outage is the server stopping and recovery is it starting again on the same port)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from structlog.testing import capture_logs

from switchboard.bridge.adapters.tickets_client import SPOOL_FILE_NAME, AppServerOutbox, AppServerRejected
from switchboard.errors import UpstreamUnavailable
from tests.tickets.harness import SERVICE_TOKEN, build_app

CALLER = "+15557654321"
T0 = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)


class ServedAppServer:
    """The App server app served by uvicorn on 127.0.0.1; stop() and start() keep the port."""

    def __init__(self, tasks: asyncio.TaskGroup, database_url: str) -> None:
        self._tasks = tasks
        self._database_url = database_url
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it every response waits ~40 ms for a delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        # A fresh app each time, as a restarted process would have (it re-runs its migrations).
        config = uvicorn.Config(build_app(self._database_url), lifespan="on", log_config=None, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = self._tasks.create_task(self._server.serve(sockets=[listener]), name="uvicorn-app-server")
        async with asyncio.timeout(10):
            while not self._server.started:
                assert not self._task.done(), "the App server failed to start"
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


@asynccontextmanager
async def app_server_on_a_socket(tmp_path: Path, *, started: bool = True) -> AsyncIterator[ServedAppServer]:
    """Yields a served App server; with started=False it has a port with nothing listening on it."""
    async with asyncio.TaskGroup() as tasks:
        server = ServedAppServer(tasks, f"sqlite+aiosqlite:///{tmp_path}/app.db")
        await server.start()
        if not started:
            await server.stop()
        try:
            yield server
        finally:
            if server._server is not None and not server._server.should_exit:
                await server.stop()


@asynccontextmanager
async def running(outbox: AppServerOutbox) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(outbox.run(), name="app-outbox")
        try:
            yield
        finally:
            task.cancel()


def make_outbox(server: ServedAppServer, spool_dir: Path, *, token: str = SERVICE_TOKEN, **options: Any) -> AppServerOutbox:
    options = {"retry_initial_s": 0.01, "retry_max_s": 0.05, "request_timeout_s": 2.0, **options}
    return AppServerOutbox(server.url, token, spool_dir=spool_dir, **options)


def say(outbox: AppServerOutbox, call_sid: str, seq: int, text: str | None = None, *, role: str = "user") -> None:
    outbox.add_message_nowait(
        call_sid, message_id=f"{call_sid}-m{seq}", role=role, text=text or f"message {seq}",
        at=T0 + timedelta(seconds=seq), seq=seq,
    )


def open_call(outbox: AppServerOutbox, call_sid: str) -> None:
    outbox.open_conversation_nowait(call_sid, tenant="acme-support", caller=CALLER, started_at=T0, trace_id="tr-1")


async def read_conversation(server: ServedAppServer, call_sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as client:
        response = await client.get("/api/conversations", params={"call_sid": call_sid})
    conversations = response.json()["conversations"]
    assert len(conversations) == 1
    conversation: dict[str, Any] = conversations[0]
    return conversation


async def test_an_outage_mid_call_loses_nothing_and_keeps_the_order(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, tmp_path / "spool")
        with capture_logs() as logs:
            async with running(outbox):
                open_call(outbox, "CA1")
                for seq in range(10):
                    say(outbox, "CA1", seq, role="assistant" if seq % 2 else "user")
                assert await outbox.wait_until_idle(5.0)

                await server.stop()
                for seq in range(10, 30):
                    say(outbox, "CA1", seq, role="assistant" if seq % 2 else "user")
                say(outbox, "CA1", 5, "message 5, cut where the caller barged in", role="assistant")
                outbox.end_conversation_nowait(
                    "CA1", end_reason="caller_hung_up", ended_at=T0 + timedelta(seconds=31), duration_s=31.0,
                    usage={"input_tokens": 10, "output_tokens": 20}, turns=[{"turn": 1}],
                )
                assert not await outbox.wait_until_idle(0.3)
                assert outbox.pending > 0

                await server.start()
                assert await outbox.wait_until_idle(10.0)
            await outbox.aclose()

        conversation = await read_conversation(server, "CA1")

    assert conversation["tenant"] == "acme-support" and conversation["caller"] == "+1******4321"
    assert [m["seq"] for m in conversation["messages"]] == list(range(30))
    assert conversation["messages"][5]["text"] == "message 5, cut where the caller barged in"
    assert conversation["messages"][6]["text"] == "message 6"
    assert (conversation["status"], conversation["end_reason"]) == ("ended", "caller_hung_up")
    assert (outbox.pending, outbox.dropped_count, outbox.rejected_count) == (0, 0, 0)
    events = [record["event"] for record in logs]
    assert events.count("app_outbox.app_server_unavailable") == 1
    assert events.count("app_outbox.app_server_recovered") == 1
    assert all(CALLER not in repr(record) and SERVICE_TOKEN not in repr(record) for record in logs)


async def test_nowait_calls_return_at_once_while_the_app_server_is_down(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path, started=False) as server:
        outbox = make_outbox(server, tmp_path / "spool")
        async with running(outbox):
            open_call(outbox, "CA2")
            slowest_s = 0.0
            for seq in range(60):
                started = time.perf_counter()
                say(outbox, "CA2", seq)
                slowest_s = max(slowest_s, time.perf_counter() - started)
                if seq % 10 == 0:
                    await asyncio.sleep(0.01)  # let the delivery loop fail and retry in between
            assert slowest_s < 0.005
            assert outbox.pending == 61
            assert not await outbox.wait_until_idle(0.2)

            await server.start()
            assert await outbox.wait_until_idle(20.0)
        await outbox.aclose()
        conversation = await read_conversation(server, "CA2")
    assert len(conversation["messages"]) == 60


async def test_a_restarted_outbox_replays_its_spool_first(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    async with app_server_on_a_socket(tmp_path, started=False) as server:
        first = make_outbox(server, spool_dir)
        async with running(first):
            open_call(first, "CA3")
            for seq in range(5):
                say(first, "CA3", seq)
            say(first, "CA3", 4, "first version")
            first.end_conversation_nowait(
                "CA3", end_reason="completed", ended_at=T0 + timedelta(seconds=9), duration_s=9.0,
                usage={"input_tokens": 1, "output_tokens": 1}, turns=[],
            )
            await asyncio.sleep(0.05)
        await first.aclose()
        assert first.pending == 8
        spool_file = spool_dir / SPOOL_FILE_NAME
        assert stat.S_IMODE(os.stat(spool_file).st_mode) == 0o600

        await server.start()
        second = make_outbox(server, spool_dir)
        # Queued by the new process before its run() starts: delivered after the replayed items.
        say(second, "CA3", 4, "final version")
        with capture_logs() as logs:
            async with running(second):
                assert await second.wait_until_idle(10.0)
        await second.aclose()
        conversation = await read_conversation(server, "CA3")

        third = make_outbox(server, spool_dir)
        async with running(third):
            assert await third.wait_until_idle(5.0)
        await third.aclose()

    assert second.delivered_count == 9
    assert [m["seq"] for m in conversation["messages"]] == [0, 1, 2, 3, 4]
    assert conversation["messages"][4]["text"] == "final version"
    assert conversation["status"] == "ended"
    assert {"event": "app_outbox.replaying", "item_count": 8, "call_count": 1, "log_level": "info"} in logs
    assert third.delivered_count == 0, "a spool whose items were delivered replays nothing"


async def test_a_rejected_item_is_logged_and_skipped_not_retried(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, tmp_path / "spool")
        with capture_logs() as logs:
            async with running(outbox):
                open_call(outbox, "CA4")
                say(outbox, "CA4", 0, role="narrator")
                outbox.add_message_nowait(
                    "CA4", message_id="CA4-t", role="tool", text="lookup", at=T0, seq=2,
                    arguments={"when": T0},  # not JSON: refused at once, without harming the sender
                )
                say(outbox, "CA4", 1, "half a surrogate \ud800 from a transcriber")
                assert await outbox.wait_until_idle(5.0)
        await outbox.aclose()
        conversation = await read_conversation(server, "CA4")

    assert [m["seq"] for m in conversation["messages"]] == [1]
    assert conversation["messages"][0]["text"] == "half a surrogate ? from a transcriber"
    assert (outbox.rejected_count, outbox.delivered_count) == (2, 2)
    rejected = [(r["status_code"], r["error"], r["log_level"]) for r in logs if r["event"] == "app_outbox.rejected"]
    assert sorted(rejected, key=str) == [(422, "invalid_request", "error"), (None, "not_json", "error")]


async def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path, started=False) as server:
        outbox = make_outbox(server, tmp_path / "spool", max_pending=3)
        with capture_logs() as logs:
            open_call(outbox, "CA5")
            for seq in range(4):
                say(outbox, "CA5", seq)
        assert (outbox.pending, outbox.dropped_count) == (3, 2)
        assert [r["kind"] for r in logs if r["event"] == "app_outbox.dropped"] == ["open", "message"]

        await server.start()
        async with running(outbox):
            assert await outbox.wait_until_idle(5.0)
        await outbox.aclose()
        conversation = await read_conversation(server, "CA5")

    # The open was dropped: the messages made a placeholder conversation.
    assert conversation["tenant"] is None
    assert [m["seq"] for m in conversation["messages"]] == [1, 2, 3]


async def test_a_refused_token_keeps_items_for_a_corrected_restart(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    async with app_server_on_a_socket(tmp_path) as server:
        misconfigured = make_outbox(server, spool_dir, token="not-the-service-token")
        with capture_logs() as logs:
            async with running(misconfigured):
                open_call(misconfigured, "CA6")
                assert not await misconfigured.wait_until_idle(0.3)
        await misconfigured.aclose()
        assert misconfigured.pending == 1
        refused = [r for r in logs if r["event"] == "app_outbox.app_server_unavailable"]
        assert [(r["status_code"], r["log_level"]) for r in refused] == [(401, "error")]

        corrected = make_outbox(server, spool_dir)
        async with running(corrected):
            assert await corrected.wait_until_idle(5.0)
        await corrected.aclose()
        conversation = await read_conversation(server, "CA6")
    assert conversation["tenant"] == "acme-support"


async def test_create_ticket_returns_the_ticket_or_raises_a_domain_error(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, tmp_path / "spool")
        ticket = await outbox.create_ticket(
            call_sid="CA7", kind="callback", phone_number=CALLER, reason="refund", requested_time="after 3pm"
        )
        with pytest.raises(AppServerRejected) as rejected:
            await outbox.create_ticket(
                call_sid="CA7", kind="callback", phone_number="not a number", reason="x", requested_time=None
            )
        await server.stop()
        started = time.perf_counter()
        with pytest.raises(UpstreamUnavailable) as unavailable:
            await outbox.create_ticket(
                call_sid="CA7", kind="callback", phone_number=CALLER, reason="again", requested_time=None
            )
        refused_after_s = time.perf_counter() - started
        await outbox.aclose()

    assert (ticket["call_sid"], ticket["phone_number"], ticket["status"]) == ("CA7", CALLER, "open")
    assert isinstance(ticket["id"], int)
    assert (rejected.value.status_code, rejected.value.error_code, rejected.value.retryable) == (
        422, "invalid_request", False,
    )
    assert unavailable.value.retryable
    assert refused_after_s < 2.0


async def test_interleaved_calls_each_keep_their_order_through_an_outage(tmp_path: Path) -> None:
    call_sids = [f"CA8{n}" for n in range(5)]
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, tmp_path / "spool", delivery_concurrency=3)
        async with running(outbox):
            for call_sid in call_sids:
                open_call(outbox, call_sid)
            for seq in range(12):
                if seq == 6:
                    await server.stop()
                for call_sid in call_sids:
                    say(outbox, call_sid, seq, f"{call_sid} draft {seq}", role="assistant")
                    # The replacement must land after the draft for every call: per-call order.
                    say(outbox, call_sid, seq, f"{call_sid} heard {seq}", role="assistant")
                await asyncio.sleep(0.005)
            await server.start()
            for call_sid in call_sids:
                outbox.end_conversation_nowait(
                    call_sid, end_reason="completed", ended_at=T0 + timedelta(seconds=20), duration_s=20.0,
                    usage={"input_tokens": 1, "output_tokens": 1}, turns=[],
                )
            assert await outbox.wait_until_idle(20.0)
        await outbox.aclose()
        conversations = [await read_conversation(server, call_sid) for call_sid in call_sids]

    for call_sid, conversation in zip(call_sids, conversations, strict=True):
        assert conversation["tenant"] == "acme-support"
        assert conversation["status"] == "ended"
        assert [m["text"] for m in conversation["messages"]] == [f"{call_sid} heard {seq}" for seq in range(12)]
    assert outbox.delivered_count == 5 * (1 + 24 + 1)


async def test_the_item_being_retried_can_be_dropped_when_the_queue_overflows(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path, started=False) as server:
        outbox = make_outbox(server, tmp_path / "spool", max_pending=2, delivery_concurrency=1)
        async with running(outbox):
            open_call(outbox, "CA9")
            await asyncio.sleep(0.05)  # the open is now in flight, failing and being retried
            for seq in range(3):
                say(outbox, "CA9", seq)
            await asyncio.sleep(0.1)
            await server.start()
            assert await outbox.wait_until_idle(5.0)
        await outbox.aclose()
        conversation = await read_conversation(server, "CA9")

    assert (outbox.dropped_count, outbox.delivered_count) == (2, 2)
    assert conversation["tenant"] is None
    assert [m["seq"] for m in conversation["messages"]] == [1, 2]


async def test_the_spool_is_compacted_to_what_is_pending(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, spool_dir, spool_compact_slack_records=10)
        async with running(outbox):
            open_call(outbox, "CA10")
            for seq in range(40):
                say(outbox, "CA10", seq)
                if seq % 5 == 0:
                    await asyncio.sleep(0.01)
            assert await outbox.wait_until_idle(10.0)
        await outbox.aclose()
        spool_lines = (spool_dir / SPOOL_FILE_NAME).read_text().splitlines()

        restarted = make_outbox(server, spool_dir)
        async with running(restarted):
            assert await restarted.wait_until_idle(5.0)
        await restarted.aclose()
        conversation = await read_conversation(server, "CA10")

    # 41 items make 82 records (enqueue + done each); compaction kept far fewer.
    assert len(spool_lines) <= 40
    assert restarted.delivered_count == 0
    assert len(conversation["messages"]) == 40


async def test_an_answer_cut_short_is_stored_as_interrupted(tmp_path: Path) -> None:
    async with app_server_on_a_socket(tmp_path) as server:
        outbox = make_outbox(server, tmp_path / "spool")
        async with running(outbox):
            open_call(outbox, "CA9")
            say(outbox, "CA9", 1, "one two three four", role="assistant")
            outbox.add_message_nowait("CA9", message_id="CA9-m1", role="assistant", text="one two…",
                                      at=T0 + timedelta(seconds=1), seq=1, interrupted=True)
            assert await outbox.wait_until_idle(5.0)
        await outbox.aclose()
        (message,) = (await read_conversation(server, "CA9"))["messages"]
        assert (message["text"], message["interrupted"]) == ("one two…", True)


async def test_a_queued_ticket_survives_a_restart_and_is_created_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    ticket = {"call_sid": "CA9", "kind": "callback", "phone_number": CALLER, "reason": "Transfer not answered.",
              "requested_time": None, "idempotency_key": "CA9:transfer-callback:item_1"}
    async with app_server_on_a_socket(tmp_path, started=False) as server:
        first = make_outbox(server, spool_dir)
        async with running(first):
            first.create_ticket_nowait(**ticket)
            first.create_ticket_nowait(**ticket)  # the same ticket queued twice (a retried webhook)
            await asyncio.sleep(0.05)
        await first.aclose()
        assert first.pending == 2

        await server.start()
        second = make_outbox(server, spool_dir)
        async with running(second):
            assert await second.wait_until_idle(10.0)
            # Created directly afterwards with the same key (another replica): the same ticket comes back.
            direct = await second.create_ticket(**ticket)
        await second.aclose()
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as client:
            tickets = (await client.get("/api/tickets", params={"call_sid": "CA9"})).json()["tickets"]

    assert second.delivered_count == 2
    assert [t["id"] for t in tickets] == [direct["id"]]
    assert tickets[0]["phone_number"] == CALLER and tickets[0]["reason"] == "Transfer not answered."

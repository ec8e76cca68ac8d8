"""The voice server's client for the App server: a durable outbox for the call record, plus tickets.

Conversation opens, messages and ends are queued by `*_nowait` (never blocking, never raising, so
the audio path can call them) and delivered in order by `run()`, which retries while the App
server is down and keeps an append-only JSONL spool so a restarted voice server delivers what the
last one could not. Tickets are created directly: a tool needs the answer. httpx errors become the
project's UpstreamError family here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import httpx

from switchboard.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from switchboard.logs import get_logger

SERVICE = "app_server"
SPOOL_FILE_NAME = "app-outbox.jsonl"
SPOOL_FORMAT_VERSION = 1
# 401/403 mean the two services disagree on the token, and 408/425/429 ask for a later retry:
# keeping these queued (and spooled) lets a corrected restart deliver them.
_RETRYABLE_4XX = frozenset({401, 403, 408, 425, 429})

log = get_logger("switchboard.bridge.app_server")

ItemKind = Literal["open", "message", "end", "ticket"]
_T = TypeVar("_T")


class AppServerRejected(UpstreamProtocolError):
    """The App server answered 4xx: this request, as sent, will not be accepted."""

    def __init__(self, operation: str, status_code: int, error_code: str | None, *, retryable: bool) -> None:
        super().__init__(SERVICE, f"{operation} answered {status_code} {error_code or ''}".strip(), retryable=retryable)
        self.status_code = status_code
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One write to deliver. `item_id` is unique across processes, so the spool can mark it done."""

    item_id: str
    call_sid: str
    kind: ItemKind
    body: dict[str, Any]

    def request(self) -> tuple[str, str]:
        path = f"/api/conversations/{quote(self.call_sid, safe='')}"
        if self.kind == "ticket":
            return "POST", "/api/tickets"
        if self.kind == "open":
            return "PUT", path
        if self.kind == "message":
            return "POST", path + "/messages"
        return "POST", path + "/end"

    def to_record(self) -> dict[str, Any]:
        return {
            "op": "enqueue", "v": SPOOL_FORMAT_VERSION, "id": self.item_id,
            "call_sid": self.call_sid, "kind": self.kind, "body": self.body,
        }


def _iso(value: datetime) -> str:
    return value.isoformat()


def _valid_text(text: str) -> str:
    """Replace lone surrogates (a transcriber can cut a character in half): the App server would refuse them."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _spool_line(record: dict[str, Any]) -> str:
    """Raises: TypeError or ValueError when the record is not JSON (e.g. a datetime in arguments)."""
    # ASCII escapes: a lone surrogate in a transcript stays encodable, in the file and on the wire.
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _pending_in_spool(lines: list[str]) -> tuple[list[OutboxItem], int]:
    """Items enqueued and never marked done, in spool order; and how many lines were unreadable."""
    pending: dict[str, OutboxItem] = {}
    unreadable = 0
    for line in lines:
        try:
            record = json.loads(line)
            if record["op"] == "enqueue":
                if record["kind"] not in ("open", "message", "end", "ticket") or not isinstance(record["body"], dict):
                    raise ValueError("unknown item")
                item = OutboxItem(str(record["id"]), str(record["call_sid"]), record["kind"], record["body"])
                pending[item.item_id] = item
            elif record["op"] == "done":
                pending.pop(str(record["id"]), None)
        except (ValueError, KeyError, TypeError):
            # A crash mid-append leaves a partial last line; anything else unreadable is skipped too.
            unreadable += 1
    return list(pending.values()), unreadable


class _PendingItems:
    """Undelivered items, one FIFO per call, plus which calls have an item ready to send.

    Pure bookkeeping, no asyncio. A call is handed to at most one sender at a time (`take_ready`
    until `finish`), which is what keeps each call's writes in order while calls proceed in parallel.
    """

    def __init__(self) -> None:
        self._per_call: dict[str, deque[tuple[int, OutboxItem]]] = {}
        self._ready: deque[str] = deque()
        self._is_ready: set[str] = set()
        self._in_flight: set[str] = set()
        self._count = 0
        self._next_order = 0

    def __len__(self) -> int:
        return self._count

    def _mark_ready(self, call_sid: str) -> None:
        if call_sid not in self._in_flight and call_sid not in self._is_ready:
            self._ready.append(call_sid)
            self._is_ready.add(call_sid)

    def append(self, item: OutboxItem) -> None:
        self._per_call.setdefault(item.call_sid, deque()).append((self._next_order, item))
        self._next_order += 1
        self._count += 1
        self._mark_ready(item.call_sid)

    def prepend(self, items: list[OutboxItem]) -> None:
        """Put items (oldest first) ahead of everything queued so far, e.g. a previous process's."""
        for order, item in enumerate(reversed(items), start=1):
            self._per_call.setdefault(item.call_sid, deque()).appendleft((-order, item))
            self._count += 1
            self._mark_ready(item.call_sid)

    def drop_oldest(self) -> OutboxItem:
        """Remove the item queued first, even if it is being sent (its sender will notice)."""
        call_sid = min(self._per_call, key=lambda c: self._per_call[c][0][0])
        _, item = self._per_call[call_sid].popleft()
        self._count -= 1
        if not self._per_call[call_sid]:
            del self._per_call[call_sid]
        return item

    def take_ready(self) -> OutboxItem | None:
        """The head of the next call with nothing in flight; that call is in flight until `finish`."""
        while self._ready:
            call_sid = self._ready.popleft()
            self._is_ready.discard(call_sid)
            items = self._per_call.get(call_sid)
            if items:  # an overflow drop may have emptied it since it became ready
                self._in_flight.add(call_sid)
                return items[0][1]
        return None

    def finish(self, item: OutboxItem) -> bool:
        """The item is done with: remove it (False if an overflow drop did already) and release its call."""
        items = self._per_call.get(item.call_sid)
        is_still_queued = items is not None and items[0][1] is item
        if items is not None and is_still_queued:
            items.popleft()
            self._count -= 1
            if not items:
                del self._per_call[item.call_sid]
        self.release(item)
        return is_still_queued

    def release(self, item: OutboxItem) -> None:
        """The item's call may be taken again; the item itself stays queued."""
        self._in_flight.discard(item.call_sid)
        if item.call_sid in self._per_call:
            self._mark_ready(item.call_sid)

    def is_queued(self, item: OutboxItem) -> bool:
        items = self._per_call.get(item.call_sid)
        return items is not None and any(queued is item for _, queued in items)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def snapshot(self) -> list[OutboxItem]:
        """All pending items, oldest first."""
        entries = [entry for items in self._per_call.values() for entry in items]
        return [item for _, item in sorted(entries, key=lambda entry: entry[0])]


class _SpoolFile:
    """Blocking file operations on the spool; called only through `asyncio.to_thread`-style executors."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_lines(self) -> list[str]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with self.path.open(encoding="utf-8") as spool:
                return [line for line in spool.read().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def check_writable(self) -> None:
        """Do once what `run()` will do: create the folder, open the spool to read and append, write a
        replacement beside it. Raises: OSError."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600))
        temporary = self.path.with_suffix(".tmp")
        os.close(os.open(temporary, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600))
        os.unlink(temporary)

    def append(self, lines: list[str]) -> None:
        # Transcripts and the caller's number are in here: owner-only.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as spool:
            spool.write("".join(line + "\n" for line in lines))

    def rewrite(self, lines: list[str]) -> None:
        temporary = self.path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as spool:
            spool.write("".join(line + "\n" for line in lines))
            spool.flush()
            os.fsync(spool.fileno())
        os.replace(temporary, self.path)


def check_spool_dir(spool_dir: Path) -> None:
    """Check at start-up that the local spool in `spool_dir` can be created, read and written.

    Blocking file I/O: call it before the event loop serves. Creates the folder and an empty spool file
    when they are missing.

    Raises:
        OSError: as the file system reported it (e.g. NotADirectoryError, PermissionError).
    """
    _SpoolFile(spool_dir / SPOOL_FILE_NAME).check_writable()


class SpoolStore(Protocol):
    """Where the outbox keeps its records durably: JSON lines, `enqueue` records and `done` markers."""

    async def read_lines(self) -> list[str]: ...

    async def append(self, lines: list[str]) -> None:
        """Raises: OSError when the records could not be stored (delivery goes on from memory)."""

    async def rewrite(self, lines: list[str]) -> None:
        """Replace everything with these (the pending items). Raises: OSError."""


async def _in_thread(function: Callable[..., _T], *args: Any) -> _T:
    """Run blocking file I/O in the default executor. If cancelled, still wait for the thread
    to finish, so no two file operations on the spool ever overlap."""
    future = asyncio.get_running_loop().run_in_executor(None, function, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


class _LocalSpool:
    """The single-machine default: an append-only JSONL file, written off the event loop."""

    def __init__(self, spool_file: _SpoolFile) -> None:
        self._file = spool_file

    async def read_lines(self) -> list[str]:
        return await _in_thread(self._file.read_lines)

    async def append(self, lines: list[str]) -> None:
        await _in_thread(self._file.append, lines)

    async def rewrite(self, lines: list[str]) -> None:
        await _in_thread(self._file.rewrite, lines)


class _AiohttpPoster:
    """The outbox's own HTTP client when none is injected: aiohttp, traced by hand.

    Measured on this machine (POST of a message to a local server): httpx's AsyncClient about 700 us of
    CPU per request, its bare transport about 530 us, aiohttp about 170-240 us. The outbox sends roughly
    one request per call per turn from the voice server's event loop, so this is the difference between
    recording costing a fifth of a call's CPU and a few per cent. OpenTelemetry has no aiohttp
    instrumentation matching our pinned version, so the client span and `traceparent` are made here,
    with the same attributes the httpx instrumentation uses (no-ops while tracing is off).
    """

    def __init__(self, *, timeout_s: float, connect_timeout_s: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=self._max_connections),
                auto_decompress=True,
            )
        return self._session

    async def request(self, method: str, url: str, *, content: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body). Raises aiohttp.ClientError or TimeoutError."""
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, StatusCode

        from switchboard.tracing import client_tracer

        with client_tracer("switchboard.app_outbox").start_as_current_span(method, kind=SpanKind.CLIENT, attributes={
            "http.request.method": method, "url.full": url,
        }) as span:
            outgoing = dict(headers)
            propagate.inject(outgoing)
            async with self._open_session().request(method, url, data=content, headers=outgoing) as response:
                body = await response.read()
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                span.set_status(StatusCode.ERROR)
            return response.status, body

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class AppServerOutbox:
    """Delivers the call record to the App server in order, through outages and restarts.

    Ordering: each call's items are delivered one at a time in the order they were queued, so a
    conversation's open precedes its messages and messages keep their order; up to
    `delivery_concurrency` calls are delivered in parallel, so one slow call holds up no other.
    Delivery is at-least-once; the App server makes it idempotent (PUT for opens, message_id for
    messages, end overwrites).

    Backpressure: at most `max_pending` items wait; when full, the oldest is dropped, counted in
    `dropped_count` and logged (`app_outbox.dropped`). The App server creates a placeholder
    conversation for messages whose open was dropped.

    Durability: every queued item is appended to `spool_dir/app-outbox.jsonl` by `run()` within
    `spool_write_interval_s` (50 ms) plus one file write of being queued, everything queued in that window
    in one write (not fsynced: it survives the process, not power loss);
    `run()` replays the spool of a previous process first. One spool_dir per process.
    """

    def __init__(
        self,
        base_url: str,
        service_token: str,
        *,
        spool_dir: Path | None = None,
        spool: SpoolStore | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_pending: int = 10_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        request_timeout_s: float = 5.0,
        delivery_concurrency: int = 4,
        spool_compact_slack_records: int = 1_000,
        spool_write_interval_s: float = 0.05,
    ) -> None:
        if (
            max_pending < 1 or retry_initial_s <= 0 or retry_max_s < retry_initial_s or request_timeout_s <= 0
            or delivery_concurrency < 1
        ):
            raise ValueError(
                "need max_pending >= 1, 0 < retry_initial_s <= retry_max_s, request_timeout_s > 0 and "
                "delivery_concurrency >= 1"
            )
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {service_token}", "Content-Type": "application/json"}
        # An injected httpx client (tests: the App server in-process) is used as is; else our aiohttp poster.
        self._http = http_client
        self._poster = None if http_client is not None else _AiohttpPoster(
            timeout_s=request_timeout_s, connect_timeout_s=min(2.0, request_timeout_s), max_connections=10)
        self._timeout = httpx.Timeout(request_timeout_s, connect=min(2.0, request_timeout_s))
        if spool is None and spool_dir is None:
            raise ValueError("need spool_dir (a local spool) or spool (e.g. the shared state's)")
        self._spool: SpoolStore = spool or _LocalSpool(_SpoolFile(Path(spool_dir or ".") / SPOOL_FILE_NAME))
        self._max_pending = max_pending
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._delivery_concurrency = delivery_concurrency
        self._spool_compact_slack_records = spool_compact_slack_records
        # Records queued within this window share one write (one thread hand-off) instead of one each.
        self._spool_write_interval_s = max(0.0, spool_write_interval_s)

        self._pending = _PendingItems()
        self._is_app_server_down = False
        self._unwritten: list[str] = []
        self._records_in_spool = 0
        self._is_writing = False
        self._is_running = False
        self._has_replayed = False
        self._has_work = asyncio.Event()
        self._has_unwritten = asyncio.Event()
        self._idle = asyncio.Event()
        self._delivered_count = 0
        self._dropped_count = 0
        self._rejected_count = 0

    # -- queueing (plain defs: callable from any task, never block) --------------------------------

    def open_conversation_nowait(
        self, call_sid: str, *, tenant: str, caller: str, started_at: datetime, trace_id: str | None
    ) -> None:
        """Queue the conversation's open; the App server stores the caller masked."""
        body = {"tenant": tenant, "caller": caller, "started_at": _iso(started_at), "trace_id": trace_id,
                "status": "live"}
        self._enqueue(call_sid, "open", body)

    def add_message_nowait(
        self,
        call_sid: str,
        *,
        message_id: str,
        role: str,
        text: str,
        at: datetime,
        seq: int,
        name: str | None = None,
        arguments: dict[str, Any] | None = None,
        result: str | None = None,
        duration_ms: float | None = None,
        interrupted: bool = False,
    ) -> None:
        """Queue a message. Queue it again with the same message_id to replace its text
        (an assistant message cut to what the caller heard, then `interrupted`)."""
        body: dict[str, Any] = {
            "message_id": message_id, "role": role, "text": _valid_text(text), "at": _iso(at), "seq": seq,
        }
        optional = {
            "name": name, "arguments": arguments, "result": None if result is None else _valid_text(result),
            "duration_ms": duration_ms,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if interrupted:
            body["interrupted"] = True
        self._enqueue(call_sid, "message", body)

    def end_conversation_nowait(
        self,
        call_sid: str,
        *,
        end_reason: str,
        ended_at: datetime,
        duration_s: float,
        usage: dict[str, Any],
        turns: list[Any],
        summary: str | None = None,
    ) -> None:
        """Queue the conversation's end with its totals (usage: input_tokens, output_tokens, ...)."""
        body: dict[str, Any] = {"end_reason": end_reason, "ended_at": _iso(ended_at), "duration_s": duration_s,
                                "usage": usage, "turns": turns}
        if summary is not None:
            body["summary"] = summary
        self._enqueue(call_sid, "end", body)

    def create_ticket_nowait(
        self, *, call_sid: str, kind: str, phone_number: str, reason: str, requested_time: str | None,
        idempotency_key: str,
    ) -> None:
        """Queue a ticket that must survive an App server outage (and a restart: it is spooled like a
        message). Delivered in order with the call's record; the idempotency key makes a redelivery, or a
        ticket that `create_ticket` did create before its answer was lost, count once."""
        body = {"call_sid": call_sid, "kind": kind, "phone_number": phone_number, "reason": reason,
                "requested_time": requested_time, "idempotency_key": idempotency_key}
        self._enqueue(call_sid, "ticket", body)

    def _enqueue(self, call_sid: str, kind: ItemKind, body: dict[str, Any]) -> None:
        item = OutboxItem(uuid.uuid4().hex, call_sid, kind, body)
        try:
            # Encoded here, once: a body that is not JSON must fail its caller's item, not the sender.
            line = _spool_line(item.to_record())
        except (TypeError, ValueError):
            self._rejected_count += 1
            log.error("app_outbox.rejected", call_sid=call_sid, kind=kind, status_code=None, error="not_json")
            return
        if len(self._pending) >= self._max_pending:
            self._drop_oldest()
        self._pending.append(item)
        self._unwritten.append(line)
        self._has_work.set()
        self._has_unwritten.set()
        self._idle.clear()

    def _drop_oldest(self) -> None:
        oldest = self._pending.drop_oldest()
        self._dropped_count += 1
        self._unwritten.append(_spool_line({"op": "done", "id": oldest.item_id}))
        self._has_unwritten.set()
        log.warning(
            "app_outbox.dropped", call_sid=oldest.call_sid, kind=oldest.kind,
            dropped_count=self._dropped_count, max_pending=self._max_pending,
        )

    # -- state ------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Items queued and not yet delivered (the one being delivered included)."""
        return len(self._pending)

    @property
    def delivered_count(self) -> int:
        return self._delivered_count

    @property
    def dropped_count(self) -> int:
        """Items dropped because the queue was full."""
        return self._dropped_count

    @property
    def rejected_count(self) -> int:
        """Items the App server refused with a 4xx; logged as `app_outbox.rejected` and not retried."""
        return self._rejected_count

    def _is_idle(self) -> bool:
        # Before the replay, the spool may hold a previous process's items: not idle yet.
        return self._has_replayed and not self._pending and not self._unwritten and not self._is_writing

    def _update_idle(self) -> None:
        if self._is_idle():
            self._idle.set()
        else:
            self._idle.clear()

    async def wait_until_idle(self, timeout_s: float) -> bool:
        """Wait until everything queued is delivered (or rejected) and the spool records it.

        Returns False when that did not happen within timeout_s (e.g. the App server is down, or
        `run()` has not yet replayed the spool of a previous process).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- direct calls -----------------------------------------------------------------------------

    async def create_ticket(
        self, *, call_sid: str, kind: str, phone_number: str, reason: str, requested_time: str | None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create a ticket now and return it (`id`, `status`, ...), within request_timeout_s. With an
        `idempotency_key` used before, the App server answers the ticket it created then.

        Raises:
            UpstreamTimeout, UpstreamUnavailable: the App server did not answer, or answered 5xx.
            AppServerRejected: the App server refused the ticket (4xx), e.g. an invalid phone number.
            UpstreamProtocolError: the answer was not a JSON object.
        """
        body: dict[str, Any] = {"call_sid": call_sid, "kind": kind, "phone_number": phone_number, "reason": reason,
                                "requested_time": requested_time}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        ticket = await self._send("POST", "/api/tickets", body, operation="create_ticket")
        log.info("app_server.ticket_created", call_sid=call_sid, ticket_id=ticket.get("id"), kind=kind)
        return ticket

    async def aclose(self) -> None:
        """Close the HTTP client if this outbox created it."""
        if self._poster is not None:
            await self._poster.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any], *, operation: str) -> dict[str, Any]:
        # `from None`: the clients' messages carry the URL, and this module never lets headers near a log.
        url = self._base_url + path
        content = _spool_line(body).encode("ascii")
        if self._poster is not None:
            try:
                status, raw = await self._poster.request(method, url, content=content, headers=self._headers)
            except TimeoutError:
                raise UpstreamTimeout(SERVICE, f"{operation} timed out", retryable=True) from None
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailable(SERVICE, f"{operation}: {type(exc).__name__}", retryable=True) from None
        else:
            assert self._http is not None
            try:
                response = await self._http.request(method, url, content=content, headers=self._headers,
                                                    timeout=self._timeout)
            except httpx.TimeoutException:
                raise UpstreamTimeout(SERVICE, f"{operation} timed out", retryable=True) from None
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(SERVICE, f"{operation}: {type(exc).__name__}", retryable=True) from None
            status, raw = response.status_code, response.content
        if status >= 500:
            raise UpstreamUnavailable(SERVICE, f"{operation} answered {status}", retryable=True)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if status >= 400:
            error_code = data.get("error") if isinstance(data, dict) else None
            raise AppServerRejected(
                operation, status, str(error_code) if error_code else None,
                retryable=status in _RETRYABLE_4XX,
            )
        if not isinstance(data, dict):
            raise UpstreamProtocolError(SERVICE, f"{operation} answered a non-object", retryable=False)
        return data

    # -- delivery ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Replay the spool of a previous process, then deliver and spool until cancelled.

        Run it once, as a task of the service-wide TaskGroup. Cancelling it leaves undelivered
        items in the spool for the next process; what was queued is flushed to the spool first.

        Raises:
            OSError: the spool folder or file cannot be read or written at start-up.
        """
        if self._is_running:
            raise RuntimeError("AppServerOutbox.run() is already running")
        self._is_running = True
        try:
            if not self._has_replayed:
                await self._replay_spool()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write_spool_forever(), name="app-outbox-spool-writer")
                for number in range(self._delivery_concurrency):
                    tasks.create_task(self._deliver_forever(), name=f"app-outbox-delivery-{number}")
        finally:
            self._is_running = False

    def adopt_records(self, lines: list[str]) -> None:
        """Deliver records another voice server spooled and could not deliver (it left or died); they
        are this server's now (the shared spool moved them). Plain def: callable from any task."""
        adopted, unreadable = _pending_in_spool(lines)
        if unreadable:
            log.warning("app_outbox.spool_records_skipped", skipped_count=unreadable)
        for item in adopted:
            if len(self._pending) >= self._max_pending:
                self._drop_oldest()
            self._pending.append(item)
        if adopted:
            log.info("app_outbox.adopted", item_count=len(adopted), call_count=len({i.call_sid for i in adopted}))
            self._idle.clear()
            self._has_work.set()

    async def _replay_spool(self) -> None:
        lines = await self._spool.read_lines()
        restored, unreadable = _pending_in_spool(lines)
        if unreadable:
            log.warning("app_outbox.spool_records_skipped", skipped_count=unreadable)
        # What a previous process left comes before anything queued since this one started.
        self._pending.prepend(restored)
        while len(self._pending) > self._max_pending:
            self._drop_oldest()
        if restored:
            log.info("app_outbox.replaying", item_count=len(restored), call_count=len({i.call_sid for i in restored}))
            self._has_work.set()
        await self._rewrite_spool()
        self._has_replayed = True
        self._update_idle()

    async def _rewrite_spool(self) -> None:
        """Replace the spool with exactly the pending items (records buffered so far included)."""
        lines = [_spool_line(item.to_record()) for item in self._pending.snapshot()]
        self._unwritten.clear()
        self._is_writing = True
        try:
            await self._spool.rewrite(lines)
        finally:
            self._is_writing = False
        self._records_in_spool = len(lines)

    async def _append_unwritten(self) -> None:
        lines, self._unwritten = self._unwritten, []
        self._is_writing = True
        try:
            await self._spool.append(lines)
        finally:
            self._is_writing = False
        self._records_in_spool += len(lines)

    async def _write_spool_forever(self) -> None:
        try:
            while True:
                await self._has_unwritten.wait()
                if self._spool_write_interval_s:
                    await asyncio.sleep(self._spool_write_interval_s)
                self._has_unwritten.clear()
                try:
                    # Rewrite with only what is pending once the spool holds `slack` records more than
                    # twice that: its size stays proportional to what is undelivered.
                    if self._records_in_spool > 2 * len(self._pending) + self._spool_compact_slack_records:
                        await self._rewrite_spool()
                    else:
                        await self._append_unwritten()
                except OSError as exc:
                    # Delivery goes on from memory; only durability across a restart is degraded.
                    log.error("app_outbox.spool_write_failed", error_type=type(exc).__name__, pending=self.pending)
                self._update_idle()
        finally:
            # Cancelled (the service is stopping): what was queued since the last write goes to disk.
            if self._unwritten:
                try:
                    await self._append_unwritten()
                except OSError as exc:
                    log.error("app_outbox.spool_write_failed", error_type=type(exc).__name__, pending=self.pending)

    async def _deliver_forever(self) -> None:
        """One sender: takes the next call with something to send, delivers that call's oldest item."""
        while True:
            item = self._pending.take_ready()
            if item is None:
                self._has_work.clear()
                self._update_idle()
                await self._has_work.wait()
                continue
            try:
                await self._deliver_with_retries(item)
            except BaseException:
                # Cancelled mid-delivery: the item stays queued and spooled for the next run.
                self._pending.release(item)
                raise
            if self._pending.finish(item):
                self._unwritten.append(_spool_line({"op": "done", "id": item.item_id}))
                self._has_unwritten.set()
            if self._pending.has_ready():
                self._has_work.set()
            self._update_idle()

    async def _deliver_with_retries(self, item: OutboxItem) -> None:
        """Deliver one item; return once it is delivered, rejected, or dropped from the queue."""
        method, path = item.request()
        delay_s = self._retry_initial_s
        while True:
            try:
                await self._send(method, path, item.body, operation=item.kind)
            except UpstreamError as exc:
                if not exc.retryable:
                    self._rejected_count += 1
                    log.error(
                        "app_outbox.rejected", call_sid=item.call_sid, kind=item.kind,
                        status_code=getattr(exc, "status_code", None), error=getattr(exc, "error_code", None),
                    )
                    return
                if not self._is_app_server_down:
                    self._is_app_server_down = True
                    status_code = getattr(exc, "status_code", None)
                    # A refused token is a configuration error, not an outage: say so louder.
                    report = log.error if status_code in (401, 403) else log.warning
                    report(
                        "app_outbox.app_server_unavailable", call_sid=item.call_sid, kind=item.kind,
                        reason=str(exc), status_code=status_code, pending=self.pending,
                    )
                # Full jitter keeps many voice servers from retrying in lockstep after an outage.
                await asyncio.sleep(random.uniform(delay_s / 2, delay_s))
                delay_s = min(delay_s * 2, self._retry_max_s)
                if not self._pending.is_queued(item):
                    return  # dropped while we waited: the queue overflowed
            else:
                self._delivered_count += 1
                if self._is_app_server_down:
                    self._is_app_server_down = False
                    log.info("app_outbox.app_server_recovered", pending=self.pending)
                return

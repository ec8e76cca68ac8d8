"""GET /ui/calls/{call_sid}/events: a live call's new and changed messages as server-sent events.

Read from the App server's own database, which the voice server already writes every message to: the
voice server's audio path does no extra work for any number of watchers. Each new message is an event
whose `id` is its row id; a reconnecting browser sends `Last-Event-ID` and gets only later rows. A
message replaced in place (an answer cut to what the caller heard, a tool's result) is sent again
without an `id`, so the resume point never moves back; the page replaces the element by its DOM id.
The stream sends `ended` (with the call's latency chart, which its end record brings) and closes when
the call ends, and closes after `MAX_STREAM_S` (the browser
reconnects and resumes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from switchboard.tickets.models import Message
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import NotFound
from switchboard.tickets.ui.present import latency_bars
from switchboard.tickets.ui.queries import call_detail, live_state, message_versions, messages_by_id
from switchboard.tickets.ui.routes.calls import CallSidPath
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

router = APIRouter(prefix="/ui", tags=["dashboard"])
Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]
MAX_STREAM_S = 600.0
KEEP_ALIVE_S = 15.0


def _event(kind: str, data: dict[str, object], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/calls/{call_sid}/events")
async def call_events(
    request: Request, call_sid: CallSidPath, scope: Scope,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> StreamingResponse:
    """`after`: the last message row the page already shows (a reconnect's Last-Event-ID wins)."""
    context = dashboard_context(request)
    detail = await call_detail(scope.session, call_sid)
    if detail is None:
        raise NotFound(f"no call {call_sid}")
    started_at = detail.conversation.started_at
    principal = scope.principal
    message_item = context.templates.get_template("_message.html").module.message_item  # type: ignore[attr-defined]
    latency_section = context.templates.get_template("_latency.html").module.latency_section  # type: ignore[attr-defined]
    after_id = int(last_event_id) if last_event_id and last_event_id.isdigit() else after
    sent_versions = {} if after_id == 0 else {
        row_id: version for row_id, version in (await message_versions(scope.session, call_sid)).items()
        if row_id <= after_id
    }

    def rendered(message: Message) -> dict[str, object]:
        html = str(message_item(message, started_at, principal))
        return {"dom_id": f"message-{message.id}", "seq": message.seq, "html": html}

    async def ended(status: str) -> dict[str, object]:
        """The call's end: its status, end reason and the latency chart its end record brought."""
        final = await call_detail(scope.session, call_sid)
        if final is None:
            return {"status": status}
        call = final.conversation
        html = str(latency_section(call, latency_bars(list(call.turns or [])), principal))
        return {"status": status, "end_reason": call.end_reason, "latency_html": html}

    async def events() -> AsyncIterator[str]:
        nonlocal after_id
        yield "retry: 1000\n\n"
        loop = asyncio.get_running_loop()
        opened_at = last_sent_at = loop.time()
        while loop.time() - opened_at < MAX_STREAM_S:
            state = await live_state(scope.session, call_sid, after_id=after_id)
            if state is None:
                return
            versions = await message_versions(scope.session, call_sid)
            changed = [row_id for row_id, version in versions.items()
                       if row_id <= after_id and sent_versions.get(row_id, version) != version]
            for message in await messages_by_id(scope.session, changed) if changed else []:
                sent_versions[message.id] = versions[message.id]
                yield _event("message", rendered(message))
            for message in state.messages:
                after_id = max(after_id, message.id)
                sent_versions[message.id] = versions.get(message.id, (0, False, False))
                yield _event("message", rendered(message), event_id=message.id)
                last_sent_at = loop.time()
            if state.status != "live":
                yield _event("ended", await ended(state.status))
                return
            if loop.time() - last_sent_at > KEEP_ALIVE_S:
                last_sent_at = loop.time()
                yield ": keep-alive\n\n"
            await asyncio.sleep(context.live_poll_interval_s)

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

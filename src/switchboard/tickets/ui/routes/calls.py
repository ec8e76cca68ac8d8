"""/ui/calls (the list, with filters and search), /ui/calls.csv (the same rows) and /ui/calls/{call_sid}."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from switchboard.logs import get_logger
from switchboard.tickets.ui.accounts import audit
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import Forbidden, NotFound
from switchboard.tickets.ui.present import latency_bars, usage_rows
from switchboard.tickets.ui.queries import (
    KNOWN_END_REASONS,
    CallFilters,
    call_detail,
    helpdesk_copies,
    list_calls,
    stream_calls,
)
from switchboard.tickets.ui.routes.forms import client_ip, render
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

log = get_logger("switchboard.dashboard")
router = APIRouter(prefix="/ui", tags=["dashboard"])
PAGE_SIZE = 50
MAX_PAGE = 10_000

Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]
CallSidPath = Annotated[str, Path(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class BadFilter(ValueError):
    pass


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"“{name}” must be a date (YYYY-MM-DD)") from None


def parse_filters(request: Request) -> CallFilters:
    """The filters from the query string. Raises: BadFilter naming the first bad one."""
    params = request.query_params
    status = params.get("status") or None
    if status not in {None, "live", "ended"}:
        raise BadFilter("“status” must be live or ended")
    end_reason = (params.get("end_reason") or "").strip() or None
    if end_reason is not None and not re.fullmatch(r"[a-z_]{1,100}", end_reason):
        raise BadFilter("“end reason” must be a reason such as caller_hung_up")
    caller = (params.get("caller") or "").strip() or None
    if caller is not None and not re.fullmatch(r"[0-9]{1,4}", caller):
        raise BadFilter("“caller's last digits” must be 1 to 4 digits")
    has_ticket = {"yes": True, "no": False, "": None}.get(params.get("has_ticket") or "", "bad")
    if has_ticket == "bad":
        raise BadFilter("“has a ticket” must be yes or no")
    slower = (params.get("slower_than_ms") or "").strip() or None
    slower_ms: float | None = None
    if slower is not None:
        try:
            slower_ms = float(slower)
        except ValueError:
            raise BadFilter("“slower than” must be a number of milliseconds") from None
        if not 0 <= slower_ms <= 600_000:
            raise BadFilter("“slower than” must be between 0 and 600000 ms")
    search = (params.get("q") or "").strip()[:200] or None
    date_from, date_to = _date(params.get("from"), "from"), _date(params.get("to"), "to")
    if date_from and date_to and date_from > date_to:
        raise BadFilter("“from” is after “to”")
    return CallFilters(date_from=date_from, date_to=date_to, status=status, end_reason=end_reason,
                       caller_digits=caller, has_ticket=has_ticket, slower_than_ms=slower_ms,  # type: ignore[arg-type]
                       search=search)


@router.get("/", response_model=None)
async def home(scope: Scope) -> Response:
    return RedirectResponse("/ui/calls", status_code=303)


@router.get("/calls", response_model=None)
async def calls_page(request: Request, scope: Scope,
                     page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1) -> Response:
    try:
        filters = parse_filters(request)
    except BadFilter as exc:
        return render(request, "calls.html", scope.principal, status_code=400, error=str(exc), rows=[],
                      filters=CallFilters(), page=1, has_next=False, query={}, end_reasons=KNOWN_END_REASONS)
    rows = await list_calls(scope.session, filters, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    return render(request, "calls.html", scope.principal, rows=rows[:PAGE_SIZE], filters=filters, page=page,
                  has_next=len(rows) > PAGE_SIZE, query=filters.as_query(), error=None,
                  end_reasons=KNOWN_END_REASONS)


CSV_COLUMNS = ("started_at", "call_sid", "tenant", "caller", "status", "end_reason", "duration_s", "cost",
               "turns", "median_turn_ms", "has_ticket")


@router.get("/calls.csv", response_model=None)
async def calls_csv(request: Request, scope: Scope) -> Response:
    """The rows of /ui/calls under the same filters, every page. For developer and above; audited."""
    if not scope.principal.may_export:
        raise Forbidden("exporting calls needs the developer role or above")
    try:
        filters = parse_filters(request)
    except BadFilter as exc:
        return Response(f"{exc}\n", status_code=400, media_type="text/plain")
    context = dashboard_context(request)
    async with scope.session.begin():
        audit(scope.session, at=context.clock.wall(), actor=scope.principal.name, action="calls.exported",
              tenant=scope.principal.tenant, client_ip=client_ip(request), detail=filters.as_query())
    log.info("dashboard.calls_exported")

    async def lines() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        async for row in stream_calls(scope.session, filters):
            c = row.conversation
            writer.writerow([
                c.started_at.isoformat() if c.started_at else "", c.call_sid, c.tenant or "", c.caller_masked or "",
                c.status, c.end_reason or "", "" if c.duration_s is None else f"{c.duration_s:.3f}",
                "" if c.cost is None else f"{c.cost:.6f}", "" if c.turn_count is None else c.turn_count,
                "" if c.median_turn_ms is None else f"{c.median_turn_ms:.1f}", "yes" if row.has_ticket else "no",
            ])
            if buffer.tell() > 32_768:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="calls.csv"', "Cache-Control": "no-store"})


@router.get("/calls/{call_sid}", response_model=None)
async def call_page(request: Request, call_sid: CallSidPath, scope: Scope) -> Response:
    detail = await call_detail(scope.session, call_sid)
    if detail is None:
        raise NotFound(f"no call {call_sid}")
    context = dashboard_context(request)
    conversation = detail.conversation
    helpdesk = await helpdesk_copies(scope.session, detail.tickets)
    return render(
        request, "call.html", scope.principal, call=conversation, started_at=conversation.started_at,
        messages=detail.messages, tickets=detail.tickets, helpdesk=helpdesk,
        bars=latency_bars(list(conversation.turns or [])), usage=usage_rows(conversation.usage),
        trace_url=context.trace_url(conversation.trace_id) if scope.principal.sees_tool_details else None,
        last_message_id=max((m.id for m in detail.messages), default=0),
    )

"""The tools a call can run in the background: knowledge lookup, callback tickets, tenant tools.

`transfer_to_human` and `end_call` never get here: the call core turns them into a last line and
then a transfer or a hang-up. Every tool returns a JSON string for the model, never raises for an
ordinary failure (the model gets `{"ok": false, ...}` and says so).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from switchboard.errors import SwitchboardError, TenantNotFound, UpstreamError
from switchboard.logs import get_logger

if TYPE_CHECKING:
    from switchboard.bridge.call_runner import LiveCall

log = get_logger("switchboard.tools")

MAX_RESULT_CHARS = 4000

# Used when the AI server cannot be reached at call start: the call still has its built-ins.
BUILTIN_TOOLS: tuple[dict[str, Any], ...] = (
    {"type": "function", "name": "get_knowledge",
     "description": "Search the company's knowledge base for facts to answer the caller.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    {"type": "function", "name": "transfer_to_human",
     "description": "Transfer the caller to a human colleague.",
     "parameters": {"type": "object", "properties": {"reason": {"type": "string"}, "summary": {"type": "string"}},
                    "required": ["reason", "summary"]}},
    {"type": "function", "name": "create_callback_ticket",
     "description": "Create a ticket so a human calls the caller back.",
     "parameters": {"type": "object", "properties": {
         "phone_number": {"type": "string"}, "reason": {"type": "string"}, "requested_time": {"type": "string"}},
         "required": ["reason"]}},
    {"type": "function", "name": "end_call",
     "description": "End the call after saying goodbye, when the caller has nothing else.",
     "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}},
)


def _result(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        text = json.dumps({**payload, "results": payload.get("results", [])[:1]}, ensure_ascii=False)[
            :MAX_RESULT_CHARS]
    return text


class ToolRunner:
    def __init__(self, recorder: Any = None) -> None:
        self._recorder = recorder

    async def schemas(self, call: LiveCall) -> list[dict[str, Any]]:
        try:
            tools = await call.deps.knowledge.available_tools_or_cached(call.context.bot_profile_key)
        except (UpstreamError, TenantNotFound):
            log.warning("tools.schemas_unavailable")
            return [dict(t) for t in BUILTIN_TOOLS]
        return tools or [dict(t) for t in BUILTIN_TOOLS]

    async def run(self, call: LiveCall, name: str, arguments: dict[str, Any]) -> str:
        key = call.context.bot_profile_key
        timeout_s = call.deps.settings.tool_timeout_s
        try:
            if name == "get_knowledge":
                query = str(arguments.get("query") or "").strip()
                if not query:
                    return _result({"ok": False, "error": "empty_query"})
                found = await call.deps.knowledge.search_knowledge(key, query, top_k=3, timeout_s=timeout_s)
                results = found.get("results") or []
                if not results:
                    return _result({"ok": True, "results": [], "note": "Nothing in the knowledge base matches."})
                return _result({"ok": True, "results": results})
            if name == "create_callback_ticket":
                return await self._callback_ticket(call, arguments)
            outcome = await call.deps.knowledge.execute_tool(key, name, arguments, call.context.call_sid,
                                                             timeout_s=timeout_s)
            return _result(outcome)
        except TenantNotFound:
            return _result({"ok": False, "error": "tool_not_found"})
        except UpstreamError as exc:
            log.warning("tool_call.failed", tool=name, error=type(exc).__name__)
            return _result({"ok": False, "error": "tool_unavailable", "retryable": exc.retryable})

    async def _callback_ticket(self, call: LiveCall, arguments: dict[str, Any]) -> str:
        if self._recorder is None:
            return _result({"ok": False, "error": "tickets_unavailable"})
        phone = str(arguments.get("phone_number") or call.context.caller_number or "").strip()
        reason = str(arguments.get("reason") or "Callback requested").strip()
        requested = arguments.get("requested_time")
        try:
            ticket = await self._recorder.create_ticket(
                call_sid=call.context.call_sid, kind="callback", phone_number=phone, reason=reason,
                requested_time=str(requested) if requested else None,
            )
        except SwitchboardError as exc:
            log.warning("tool_call.failed", tool="create_callback_ticket", error=type(exc).__name__)
            return _result({"ok": False, "error": "ticket_not_created"})
        return _result({"ok": True, "ticket_id": ticket.get("id"), "status": ticket.get("status", "open")})

"""ToolCalls: the functions the model calls, and their results sent back.

The runner performs a tool call (StartToolCall) within `tool_timeout_s`; `end_call` and
`transfer_to_human` are handled here. Results go back once the response that asked for them is done,
followed by one response.create. A part of CallStateMachine (a mixin over CallState). Pure: no I/O, no
clock reads.
"""

from __future__ import annotations

import json
from collections import deque

from switchboard.bridge.call.actions import (
    AddConversationItem,
    CallAction,
    ClearCallerPlayback,
    RecordMessage,
    SendToolResult,
    StartToolCall,
)
from switchboard.bridge.call.call_state import CallState, PendingExit, ToolRun
from switchboard.bridge.call.events import ToolCallFinished, ToolCallRequested

END_CALL_TOOL = "end_call"
TRANSFER_TOOL = "transfer_to_human"


class ToolCalls(CallState):
    """Tool calls: requested, finished or timed out, results flushed."""

    def _on_tool_requested(self, event: ToolCallRequested, now: float, out: list[CallAction]) -> None:
        if event.call_id in self._tools:
            return
        self._stats.tool_calls += 1
        seq = self._next_seq()
        if event.name == END_CALL_TOOL or (event.name == TRANSFER_TOOL and self.settings.transfer_number):
            # Handled here: a last line plays, then the call ends or is transferred.
            kind = "end_call" if event.name == END_CALL_TOOL else "transfer"
            result = json.dumps({"ok": True} if kind == "end_call" else {"ok": True, "status": "transferring"})
            self._exit = PendingExit(kind=kind, stage="wait_response", holding_response=event.response_id)
            if kind == "transfer":
                self._transfer_note = (*_transfer_arguments(event.arguments), f"tool:{event.call_id}", seq)
            self._answer_tool_at_once(event, seq, result, out)
            return
        if event.name == TRANSFER_TOOL:
            result = json.dumps({"ok": False, "error": "no_transfer_number",
                                 "detail": "No human is available by phone; offer a callback ticket instead."})
            self._answer_tool_at_once(event, seq, result, out)
            return
        self._tools[event.call_id] = ToolRun(
            call_id=event.call_id, name=event.name, arguments=event.arguments, response_id=event.response_id,
            started_at=now, seq=seq, next_thinking_at=now + self.settings.thinking_delay_s,
            generation=self._generation,
        )
        if self._next_thinking_at is None:
            self._next_thinking_at = now + self.settings.thinking_delay_s
        out.append(StartToolCall(call_id=event.call_id, name=event.name, arguments=event.arguments))

    def _answer_tool_at_once(self, event: ToolCallRequested, seq: int, result: str, out: list[CallAction]) -> None:
        """A tool the call answers itself (end the call, transfer or its refusal): the result, and its record."""
        self._tool_results.append(SendToolResult(event.call_id, result))
        out.append(
            RecordMessage(
                seq=seq, role="tool", text=event.name, message_id=f"tool:{event.call_id}", name=event.name,
                arguments=event.arguments, result=result, duration_ms=0.0,
            )
        )

    def _on_tool_finished(self, event: ToolCallFinished, now: float, out: list[CallAction]) -> None:
        run = self._tools.pop(event.call_id, None)
        if run is None:
            return  # timed out already, or unknown
        self._finish_tool(run, event.output, now, out)

    def _finish_tool(self, run: ToolRun, output: str, now: float, out: list[CallAction]) -> None:
        self._remember(run.seq, f"call:{run.call_id}", {
            "type": "function_call", "call_id": run.call_id, "name": run.name, "arguments": run.arguments})
        self._remember(run.seq, f"output:{run.call_id}", {
            "type": "function_call_output", "call_id": run.call_id, "output": output})
        if not self._tools and not self._reconnecting:
            self._next_thinking_at = None
            # Stop the thinking sound the moment the last result is in: drop what is queued and, when
            # only thinking sound is still unplayed at Twilio, clear it there too.
            self._queue = deque(q for q in self._queue if q.item_id is not None)
            if self._ledger.has_unplayed_audio and self._ledger.unplayed_item_ids() == set():
                out.append(ClearCallerPlayback())
                self._ledger.record_cleared(now)
                self._unmarked_ms = 0.0
                self._play_end_estimate = min(self._play_end_estimate, now)
        if run.generation != self._generation:
            # Asked for by a session that has since been replaced: the new one has never seen the call, so
            # it is created there first (an output for an unknown call_id is an error).
            self._tool_results.append(AddConversationItem({
                "type": "function_call", "call_id": run.call_id, "name": run.name, "arguments": run.arguments}))
        self._tool_results.append(SendToolResult(run.call_id, output))
        out.append(
            RecordMessage(
                seq=run.seq, role="tool", text=run.name, message_id=f"tool:{run.call_id}", name=run.name,
                arguments=run.arguments, result=output, duration_ms=round((now - run.started_at) * 1000.0, 1),
            )
        )

    def _flush_tool_results(self, out: list[CallAction]) -> None:
        # Tool outputs go back only after the response that held the call is done, then one response.create.
        if not self._tool_results or self._active_response_id is not None or self._inflight_request is not None:
            return
        if self._exit is not None and self._exit.stage == "wait_response":
            return
        out.extend(self._tool_results)
        self._tool_results = []
        if self._exit is not None:
            return  # the last line is queued or was spoken; nothing more to ask the model
        self._queue_request(None)


def _transfer_arguments(arguments: str) -> tuple[str, str]:
    """`reason` and `summary` of a transfer_to_human call (empty when the model gave none or bad JSON)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return "", ""
    if not isinstance(parsed, dict):
        return "", ""
    return str(parsed.get("reason") or "").strip()[:500], str(parsed.get("summary") or "").strip()[:1000]

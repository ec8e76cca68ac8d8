"""What a callback ticket says in a helpdesk: subject and description, built from the ticket and its call.

Pure. The summary is the conversation's own (a transfer's hand-over summary) or, failing that, the
last lines of the transcript; the dashboard link is `/ui/calls/{call_sid}` on the App server's public URL.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import quote

TRANSCRIPT_LINES = 8
MAX_SUMMARY_CHARS = 2000


@dataclass(frozen=True, slots=True)
class CallbackDetails:
    ticket_id: int
    call_sid: str
    phone_number: str
    reason: str
    requested_time: str | None
    summary: str | None
    dashboard_url: str

    @property
    def subject(self) -> str:
        return f"Callback request from {self.phone_number}"

    def lines(self) -> list[tuple[str, str]]:
        return [
            ("Caller", self.phone_number),
            ("Reason", self.reason),
            ("Requested time", self.requested_time or "not given"),
            ("Summary", self.summary or "no summary recorded"),
            ("Call", self.dashboard_url),
        ]

    def text(self) -> str:
        return "\n".join(f"{label}: {value}" for label, value in self.lines())

    def html(self) -> str:
        rows = []
        for label, value in self.lines():
            shown = html.escape(value).replace("\n", "<br>")
            if label == "Call":
                shown = f'<a href="{html.escape(value, quote=True)}">{shown}</a>'
            rows.append(f"<p><strong>{html.escape(label)}:</strong> {shown}</p>")
        return "".join(rows)


def dashboard_url(public_url: str, call_sid: str) -> str:
    return f"{public_url.rstrip('/')}/ui/calls/{quote(call_sid, safe='')}"


def transcript_summary(summary: str | None, messages: list[tuple[str, str]]) -> str | None:
    """The conversation's summary, or its last transcript lines ("Caller: ...", "Agent: ...")."""
    if summary:
        return summary[:MAX_SUMMARY_CHARS]
    said = [(role, text.strip()) for role, text in messages if role in ("user", "assistant") and text.strip()]
    if not said:
        return None
    lines = [f"{'Caller' if role == 'user' else 'Agent'}: {text}" for role, text in said[-TRANSCRIPT_LINES:]]
    return "\n".join(lines)[-MAX_SUMMARY_CHARS:]

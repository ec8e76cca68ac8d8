"""The App server: conversations, messages and tickets recorded by the voice server (`serve app`).

Decisions beyond docs/internal-api.md (shapes there are kept; these only add):

- A message or an end for a call_sid with no conversation creates a placeholder conversation
  (tenant and caller null, started_at from the message time, or ended_at - duration_s), because
  the voice server's outbox may drop or reorder an open. The open (PUT) fills it in and answers
  200; a new conversation answers 201.
- Status only moves forward: a PUT (always "live") never reopens an ended conversation.
- A repeated message_id replaces text (and tool fields that are sent); a different role for the
  same message_id is 409 message_conflict.
- Times must carry a zone (422 otherwise), are stored as UTC, and are rendered with +00:00.
- Added fields: messages carry message_id and seq, conversations carry summary, tickets carry
  created_at. The list endpoints also accept no call_sid (newest first, `limit` <= 500).
- Writes answer with the stored object: PUT and end the conversation view, a message its view,
  a ticket its view (201).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so `switchboard users|keys` (tickets.ui.commands) does not import the web stack.
    if name == "create_app":
        from switchboard.tickets.app import create_app

        return create_app
    raise AttributeError(name)

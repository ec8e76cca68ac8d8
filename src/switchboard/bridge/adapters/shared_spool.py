"""The App server outbox's records in the shared state (SWITCHBOARD_STATE_URL), instead of a local file.

Each record is a row owned by the voice server that queued it; a `done` marker deletes its row. When a
voice server leaves (SIGTERM) or stops heartbeating, another adopts its rows (switchboard.state,
`spool_adopt`) and delivers them: the App server is idempotent per message id, so delivery stays at least
once. Database errors become OSError, which the outbox treats as a spool write that failed.
"""

from __future__ import annotations

import json

from sqlalchemy.exc import SQLAlchemyError

from switchboard.state.store import VoiceState

_STATE_ERRORS = (SQLAlchemyError, TimeoutError)


class SharedSpool:
    """A SpoolStore (adapters/tickets_client.py) on the shared state, for one voice server."""

    def __init__(self, state: VoiceState, owner: str) -> None:
        self._state = state
        self._owner = owner

    async def read_lines(self) -> list[str]:
        try:
            return await self._state.spool_records(owner=self._owner)
        except _STATE_ERRORS as exc:
            raise OSError(f"shared outbox unavailable: {type(exc).__name__}") from None

    async def append(self, lines: list[str]) -> None:
        records: list[tuple[str, str]] = []
        done: list[str] = []
        for line in lines:
            record = json.loads(line)
            if record.get("op") == "enqueue":
                records.append((str(record["id"]), line))
            elif record.get("op") == "done":
                done.append(str(record["id"]))
        try:
            # Enqueues first: an item queued and delivered within one batch is stored, then deleted.
            await self._state.spool_append(owner=self._owner, records=records)
            await self._state.spool_done(item_ids=done)
        except _STATE_ERRORS as exc:
            raise OSError(f"shared outbox unavailable: {type(exc).__name__}") from None

    async def rewrite(self, lines: list[str]) -> None:
        # Delivered rows are deleted as they go, so there is nothing to compact: store what is missing.
        await self.append(lines)

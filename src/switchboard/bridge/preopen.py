"""A pre-opened call's record waits until its stream arrives.

The model session is opened at the webhook and greets before Twilio's stream is here. When the stream
lands on another voice server, this session is never heard: what it would have recorded (the conversation's
opening, the unheard greeting) must never reach the App server, or it would duplicate the greeting and
overwrite the real call's record. So the pre-opened call records into this buffer, which is released
into the real recorder when the stream attaches here and discarded when none does. Plain defs only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DeferredRecorder:
    """A ConversationRecorder that holds every write until `release()` (then passes them on, and
    everything after straight through) or `discard()` (then drops them all, and everything after)."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._held: list[Callable[[], None]] | None = []
        self._is_discarded = False

    def release(self) -> None:
        held, self._held = self._held, None
        for write in held or ():
            write()

    def discard(self) -> None:
        self._held = None
        self._is_discarded = True

    def _pass(self, write: Callable[[], None]) -> None:
        if self._is_discarded:
            return
        if self._held is not None:
            self._held.append(write)
        else:
            write()

    def open_conversation_nowait(self, call_sid: str, **fields: Any) -> None:
        self._pass(lambda: self._target.open_conversation_nowait(call_sid, **fields))

    def add_message_nowait(self, call_sid: str, **fields: Any) -> None:
        self._pass(lambda: self._target.add_message_nowait(call_sid, **fields))

    def end_conversation_nowait(self, call_sid: str, **fields: Any) -> None:
        self._pass(lambda: self._target.end_conversation_nowait(call_sid, **fields))

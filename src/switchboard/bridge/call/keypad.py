"""KeypadGatherer: the caller's key presses (Twilio `dtmf`) gathered into what the model is told.

Pure: no I/O and no clock; the state machine owns one and passes `now`. Digits are gathered until a
pause of `pause_s` without a key, or `#` (the terminator, not kept); `*` and a `#` pressed with
nothing gathered are kept as characters. A key the tenant maps (`keypad: {"0": transfer}`) acts at
once when it is pressed on its own, i.e. when no digits are being gathered; mid-sequence it is a digit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# What Twilio may send as `dtmf.digit` (protocols-addendum A.1: 0-9, * and #; A-D are not documented).
KEYS = frozenset("0123456789*#ABCD")
TERMINATOR = "#"
# After a key, audio events are the key's own tone for this long (Twilio also plays it into the inbound audio).
TONE_GUARD_S = 0.6
# Keypad actions a tenant may map a key to.
SHORTCUT_ACTIONS = frozenset({"transfer"})


@dataclass(frozen=True, slots=True)
class DigitsEntered:
    """The caller finished typing: `digits` in order (terminator dropped); `first_pressed_at` is monotonic s."""

    digits: str
    first_pressed_at: float


@dataclass(frozen=True, slots=True)
class ShortcutPressed:
    """A key the tenant maps was pressed on its own: perform `action` now, without the model."""

    key: str
    action: str


KeypadOutcome = DigitsEntered | ShortcutPressed


def keypad_message(digits: str) -> str:
    """The user message the model gets for typed digits (the record holds the same text)."""
    return f"(typed on the phone keypad) {digits}"


class KeypadGatherer:
    """Turns single key presses into `DigitsEntered` / `ShortcutPressed` outcomes. See the module docstring."""

    def __init__(self, *, pause_s: float, shortcuts: Mapping[str, str] | None = None,
                 tone_guard_s: float = TONE_GUARD_S) -> None:
        self.pause_s = pause_s
        self.shortcuts = dict(shortcuts or {})
        self.tone_guard_s = tone_guard_s
        self._digits: list[str] = []
        self._first_pressed_at = 0.0
        self._last_pressed_at: float | None = None

    @property
    def is_gathering(self) -> bool:
        return bool(self._digits)

    def is_tone_guarded(self, now: float) -> bool:
        """Whether caller audio now may be a key's tone rather than speech."""
        if self._digits:
            return True
        return self._last_pressed_at is not None and now < self._last_pressed_at + self.tone_guard_s

    def press(self, key: str, now: float) -> KeypadOutcome | None:
        """One key press; returns an outcome when it completes one. Keys outside KEYS are ignored."""
        if key not in KEYS:
            return None
        self._last_pressed_at = now
        if not self._digits:
            action = self.shortcuts.get(key)
            if action is not None:
                return ShortcutPressed(key=key, action=action)
            self._first_pressed_at = now
            if key == TERMINATOR:
                return DigitsEntered(digits=key, first_pressed_at=now)
        if key == TERMINATOR:
            return self._take()
        self._digits.append(key)
        return None

    def next_deadline(self) -> float | None:
        """When the pause ends the gathering (None while nothing is gathered)."""
        if not self._digits or self._last_pressed_at is None:
            return None
        return self._last_pressed_at + self.pause_s

    def expire(self, now: float) -> DigitsEntered | None:
        """Call at `next_deadline()`: the digits gathered so far, if the pause has passed."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return None
        return self._take()

    def _take(self) -> DigitsEntered:
        outcome = DigitsEntered(digits="".join(self._digits), first_pressed_at=self._first_pressed_at)
        self._digits = []
        return outcome

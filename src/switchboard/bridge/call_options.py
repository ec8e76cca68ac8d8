"""A tenant's keypad shortcuts and turn detection (from the call profile) as call-core settings.

Pure. The AI server validated both when the tenant file was loaded (knowledge/tenant_file.py); what
arrives here malformed (an old cached profile) is left out rather than failing the call.
"""

from __future__ import annotations

from typing import Any

from switchboard.bridge.call.keypad import KEYS, SHORTCUT_ACTIONS

# A key's tone may be taken for speech until the turn it started is committed: the VAD's silence
# duration after it, plus the tone itself and some margin.
TONE_GUARD_MARGIN_S = 0.5
# semantic_vad waits longer the less eager it is; its commit of a tone comes later accordingly.
SEMANTIC_TONE_GUARD_S = {"low": 2.5, "medium": 1.5, "auto": 1.5, "high": 1.0}


def keypad_and_turn_settings(profile_extra: dict[str, Any], *, dtmf_pause_ms: float) -> dict[str, Any]:
    """`CallSettings` fields: dtmf_pause_s, keypad, keypad_tone_guard_s, turn_detection."""
    raw_keypad = profile_extra.get("keypad") or {}
    keypad = tuple(sorted(
        (str(key), str(action)) for key, action in raw_keypad.items()
        if str(key) in KEYS and str(action) in SHORTCUT_ACTIONS
    )) if isinstance(raw_keypad, dict) else ()
    turn_detection = profile_extra.get("turn_detection")
    if not isinstance(turn_detection, dict) or turn_detection.get("type") not in ("server_vad", "semantic_vad"):
        turn_detection = None
    return {
        "dtmf_pause_s": dtmf_pause_ms / 1000.0,
        "keypad": keypad,
        "keypad_tone_guard_s": tone_guard_s(turn_detection),
        "turn_detection": turn_detection,
    }


def tone_guard_s(turn_detection: dict[str, Any] | None) -> float:
    if turn_detection is None:
        return TONE_GUARD_MARGIN_S + 0.5  # the default server VAD: 500 ms of silence ends a turn
    if turn_detection.get("type") == "semantic_vad":
        return SEMANTIC_TONE_GUARD_S.get(str(turn_detection.get("eagerness") or "auto"), 1.5)
    silence_ms = turn_detection.get("silence_duration_ms", 500)
    silence_s = float(silence_ms) / 1000.0 if isinstance(silence_ms, int | float) else 0.5
    return TONE_GUARD_MARGIN_S + silence_s

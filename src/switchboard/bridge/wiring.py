"""Builds the voice server's production dependencies (App server outbox, tool runner) from settings."""

from __future__ import annotations

from typing import Any

from switchboard.config import VoiceSettings


def build_voice_dependencies(settings: VoiceSettings) -> dict[str, Any]:
    return {}

"""The OpenAI model ids Switchboard uses by default, and the ones the pinned `openai` SDK marks deprecated.

Pure data plus one start-up check. The deprecation table is copied from the "Deprecated values" notes of the
pinned SDK (openai 3.57.0: `RealtimeSessionCreateRequest.model` and `AudioTranscription.model`); a test reads
the installed SDK's source and fails when the two drift apart, so bumping the SDK points here.
"""

from __future__ import annotations

from switchboard.logs import get_logger

log = get_logger("switchboard.models")

# Current GA models (not marked deprecated by the pinned SDK).
DEFAULT_REALTIME_MODEL = "gpt-realtime-2.1"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-transcribe"

# model id -> announced shutdown date (ISO), as the pinned SDK lists them.
DEPRECATED_MODELS: dict[str, str] = {
    # Realtime session models.
    "gpt-realtime": "2027-01-20",
    "gpt-realtime-2025-08-28": "2027-01-20",
    "gpt-realtime-mini": "2027-01-20",
    "gpt-realtime-mini-2025-12-15": "2027-01-20",
    "gpt-audio-mini": "2027-01-20",
    "gpt-audio-mini-2025-12-15": "2027-01-20",
    # Input transcription models.
    "whisper-1": "2027-02-26",
    "gpt-4o-mini-transcribe": "2027-02-26",
    "gpt-4o-mini-transcribe-2025-12-15": "2027-02-26",
    "gpt-4o-transcribe": "2027-02-26",
    "gpt-4o-transcribe-diarize": "2027-02-26",
}


def shutdown_date(model: str) -> str | None:
    """The announced shutdown date of a deprecated model, or None if the pinned SDK lists none."""
    return DEPRECATED_MODELS.get(model)


def warn_about_deprecated_models(configured: dict[str, str]) -> list[str]:
    """Log one warning line per configured model (setting name -> model id) that is deprecated.

    Returns the deprecated model ids, in the order given. Call once, at start-up.
    """
    deprecated = []
    for setting, model in configured.items():
        date = shutdown_date(model)
        if date is not None:
            log.warning("model.deprecated", setting=setting, model=model, shutdown_date=date)
            deprecated.append(model)
    return deprecated

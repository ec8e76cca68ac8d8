"""Default models are current in the pinned `openai` SDK, and a deprecated one is named once at start-up."""

from __future__ import annotations

import inspect
import re
import typing

from openai.types.realtime import audio_transcription, realtime_session_create_request
from structlog.testing import capture_logs

from switchboard.bridge.wiring import build_voice_dependencies
from switchboard.config import VoiceSettings
from switchboard.openai_models import (
    DEFAULT_REALTIME_MODEL,
    DEFAULT_TRANSCRIPTION_MODEL,
    DEPRECATED_MODELS,
)


def _sdk_deprecations(module: object) -> dict[str, str]:
    """The "Deprecated values" notes of an SDK types module: model id -> announced shutdown date."""
    source = inspect.getsource(module)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for block in re.findall(r"Deprecated values:(.*?)\"\"\"", source, flags=re.S):
        for names, date in re.findall(r"-\s+((?:\"[^\"]+\",?\s*)+):\s+Announced shutdown date:\s+(\d{4}-\d{2}-\d{2})",
                                      block):
            for name in re.findall(r"\"([^\"]+)\"", names):
                found[name] = date
    return found


def _sdk_literal_models(model_class: type, field: str) -> set[str]:
    annotation = model_class.model_fields[field].annotation  # type: ignore[attr-defined]
    names: set[str] = set()
    for arg in typing.get_args(annotation):
        names.update(a for a in typing.get_args(arg) if isinstance(a, str))
    return names


def test_the_deprecation_table_matches_the_pinned_sdk() -> None:
    from_sdk = {**_sdk_deprecations(realtime_session_create_request), **_sdk_deprecations(audio_transcription)}
    assert from_sdk["gpt-realtime"] == "2027-01-20" and from_sdk["gpt-4o-mini-transcribe"] == "2027-02-26"
    assert from_sdk == DEPRECATED_MODELS


def test_the_defaults_are_models_the_sdk_knows_and_does_not_deprecate() -> None:
    realtime_models = _sdk_literal_models(realtime_session_create_request.RealtimeSessionCreateRequest, "model")
    transcription_models = _sdk_literal_models(audio_transcription.AudioTranscription, "model")
    assert DEFAULT_REALTIME_MODEL in realtime_models and DEFAULT_REALTIME_MODEL not in DEPRECATED_MODELS
    assert DEFAULT_TRANSCRIPTION_MODEL in transcription_models and DEFAULT_TRANSCRIPTION_MODEL not in DEPRECATED_MODELS
    settings = VoiceSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.openai_realtime_model == DEFAULT_REALTIME_MODEL
    assert settings.transcription_model == DEFAULT_TRANSCRIPTION_MODEL


def test_a_deprecated_model_gets_one_warning_line_with_its_shutdown_date_at_start_up(monkeypatch) -> None:
    for name in ("OPIK_URL_OVERRIDE", "OPIK_API_KEY", "OPIK_WORKSPACE", "OPIK_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with capture_logs() as current:
        build_voice_dependencies(VoiceSettings(OPENAI_REALTIME_MODEL=DEFAULT_REALTIME_MODEL))
    assert [line for line in current if line["event"] == "model.deprecated"] == []

    with capture_logs() as old:
        build_voice_dependencies(VoiceSettings(OPENAI_REALTIME_MODEL="gpt-realtime"))
    warnings = [line for line in old if line["event"] == "model.deprecated"]
    assert warnings == [{"event": "model.deprecated", "log_level": "warning", "setting": "OPENAI_REALTIME_MODEL",
                         "model": "gpt-realtime", "shutdown_date": "2027-01-20"}]

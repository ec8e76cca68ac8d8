"""The scale-out settings stop start-up with one line naming the variable when malformed."""

from __future__ import annotations

import pytest

from switchboard.config import SettingsError, VoiceSettings, load_settings


@pytest.mark.parametrize(("name", "value"), [
    ("SWITCHBOARD_STATE_URL", "postgres://db/voice"),
    ("SWITCHBOARD_INSTANCE_ID", "voice 1/evil"),
    ("SWITCHBOARD_STREAM_URL_TTL_S", "0"),
])
def test_a_malformed_scale_out_setting_names_itself(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(VoiceSettings)


def test_defaults_one_voice_server_on_its_own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWITCHBOARD_STATE_URL", "SWITCHBOARD_INSTANCE_ID", "SWITCHBOARD_STREAM_URL_TTL_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWITCHBOARD_STATE_URL", "")
    settings = load_settings(VoiceSettings)
    assert settings.switchboard_state_url is None
    assert settings.stream_url_ttl_s == 60.0
    assert settings.instance_id  # the host name

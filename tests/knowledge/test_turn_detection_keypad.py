"""A tenant's turn_detection, keypad and transfer timeout: validated at load (errors name tenant and key),
stored as written, served in the call profile; the instructions say the caller can type digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.tenant_file import parse_tenant_file

from .conftest import ACME, load_file, running_app, write_tenant_file

BASE = """\
tenants:
  - key: quick-line
    company: Quick Line
    greeting: "Hi."
    credits: 5
    transfer: {number: "+15559990000", caller_id: "+15551230001", timeout_s: 15}
"""


@pytest.mark.parametrize(("extra", "error"), [
    ("turn_detection: {type: server_vad, threshold: 1.5}",
     "tenant 'quick-line': turn_detection.threshold: Input should be less than or equal to 1"),
    ("turn_detection: {type: server_vad, silence_ms: 300}", "tenant 'quick-line': unknown key 'turn_detection.silence_ms'"),
    ("turn_detection: {type: server_vad, idle_timeout_ms: 100}",
     "tenant 'quick-line': turn_detection.idle_timeout_ms: Input should be greater than or equal to 5000"),
    ("turn_detection: {type: semantic_vad, eagerness: slow}",
     "tenant 'quick-line': turn_detection.eagerness: Input should be 'low', 'medium', 'high' or 'auto'"),
    ("turn_detection: {type: semantic_vad, threshold: 0.5}",
     "tenant 'quick-line': unknown key 'turn_detection.threshold'"),
    ("turn_detection: {type: push_to_talk}", "tenant 'quick-line': turn_detection: type must be server_vad or semantic_vad"),
    ("keypad: {0: hang_up}", "tenant 'quick-line': keypad.0: Input should be 'transfer'"),
    ("keypad: {x: transfer}", "tenant 'quick-line': keypad: 'x' is not a keypad key (0-9, * or #)"),
])
def test_bad_values_name_the_tenant_and_the_key(extra: str, error: str) -> None:
    with pytest.raises(TenantFileError) as caught:
        parse_tenant_file(BASE + f"    {extra}\n")
    assert str(caught.value) == error


def test_a_keypad_transfer_needs_a_transfer_number() -> None:
    text = BASE.replace('    transfer: {number: "+15559990000", caller_id: "+15551230001", timeout_s: 15}\n', "")
    with pytest.raises(TenantFileError, match="tenant 'quick-line': keypad.0: transfer needs"):
        parse_tenant_file(text + "    keypad: {0: transfer}\n")


def test_a_transfer_timeout_outside_twilios_range_is_refused() -> None:
    with pytest.raises(TenantFileError, match=r"tenant 'quick-line': transfer.timeout_s: Input should be greater"):
        parse_tenant_file(BASE.replace("timeout_s: 15", "timeout_s: 2"))


async def test_the_call_profile_carries_them_as_written(database_url: str, tmp_path: Path) -> None:
    patient = ACME.replace(
        "    credits: 500\n",
        "    credits: 500\n"
        "    turn_detection: {type: server_vad, threshold: 0.8, silence_duration_ms: 1200}\n"
        '    keypad: {"0": transfer}\n', 1)
    brisk = BASE.removeprefix("tenants:\n") + "    turn_detection: {type: semantic_vad, eagerness: high}\n"
    await load_file(database_url, write_tenant_file(tmp_path, patient, brisk))
    async with running_app(database_url) as client:
        acme = (await client.post("/voiceagent/call_profile/", json={"bot_profile_key": "acme-support"})).json()
        quick = (await client.post("/voiceagent/call_profile/", json={"bot_profile_key": "quick-line"})).json()
    assert acme["turn_detection"] == {"type": "server_vad", "threshold": 0.8, "silence_duration_ms": 1200}
    assert acme["keypad"] == {"0": "transfer"}
    assert quick["turn_detection"] == {"type": "semantic_vad", "eagerness": "high"}
    assert quick["keypad"] == {}
    assert quick["transfer"] == {"number": "+15559990000", "caller_id": "+15551230001", "timeout_s": 15}
    assert "type digits on their phone keypad" in acme["instructions"]
    assert "pressing 0 on its own transfers the caller to a person" in acme["instructions"]
    assert "type digits on their phone keypad" in quick["instructions"]

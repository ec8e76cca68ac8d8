"""Tenant file validation: every error is one line naming the tenant and the key path."""

from __future__ import annotations

import pytest

from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.tenant_file import parse_tenant_file

from .conftest import ACME, GLOBEX

MINIMAL = """\
tenants:
  - key: acme-support
    company: Acme
    greeting: Hi
    credits: 5
"""


def error_of(text: str) -> str:
    with pytest.raises(TenantFileError) as info:
        parse_tenant_file(text)
    return str(info.value)


def test_the_contract_example_parses_with_all_fields() -> None:
    acme, globex = parse_tenant_file("tenants:\n" + ACME + GLOBEX)
    assert acme.key == "acme-support"
    assert acme.numbers == ["+15551230001"]
    assert acme.voice.model_dump() == {"provider": "openai", "name": "marin", "speed": 1.0}
    assert acme.tools[0].http.headers == {"Authorization": "Bearer ${ACME_ORDERS_TOKEN}"}
    assert acme.tools[0].http.timeout_s == 10.0
    assert acme.tools[0].http.allow_private_network is False
    assert [k.source for k in acme.knowledge] == ["kb/returns.md", "inline:Holidays"]
    assert globex.voice.model_dump() == {
        "provider": "elevenlabs", "voice_id": "21m00Tcm4TlvDq8ikWAM", "model": "eleven_flash_v2_5", "speed": 1.0,
    }
    assert globex.transfer is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    colour: red\n", "tenant 'acme-support': unknown key 'colour'"),
        ('    numbers: ["555"]\n', "tenant 'acme-support': numbers.0: '555' is not an E.164 number"),
        ("    numbers: [+15551230001]\n",
         "tenant 'acme-support': numbers.0: 15551230001 is not an E.164 number (quote it: \"+15551230001\")"),
        ('    business_hours: {timezone: America/New_York, sat: "10-14"}\n',
         "tenant 'acme-support': business_hours.sat: '10-14' is not \"HH:MM-HH:MM\" or \"closed\""),
        ('    business_hours: {timezone: Mars/Olympus, sat: "10:00-14:00"}\n',
         "tenant 'acme-support': business_hours.timezone: 'Mars/Olympus' is not a known time zone"),
        ('    business_hours: {timezone: UTC, mon-fri: "09:00-17:00", fri: closed}\n',
         "tenant 'acme-support': business_hours.fri: Friday is already set by 'mon-fri'"),
        ('    business_hours: {timezone: UTC, weekdays: "09:00-17:00"}\n',
         "tenant 'acme-support': business_hours.weekdays: unknown key 'weekdays'"
         " (use timezone, a day like mon or a range like mon-fri)"),
        ("    voice: {provider: openai, name: marin, colour: red}\n", "tenant 'acme-support': unknown key 'voice.colour'"),
        ("    voice: {provider: acme}\n", "tenant 'acme-support': voice: provider must be openai or elevenlabs"),
        ("    voice: {provider: elevenlabs, voice_id: v1}\n", "tenant 'acme-support': missing key 'voice.model'"),
        ("    transcriber: whisper\n", "tenant 'acme-support': transcriber: Input should be 'none', 'cartesia', 'elevenlabs' or 'openai'"),
        ('    transfer: {number: "+15559990000", caller_id: "0800"}\n',
         "tenant 'acme-support': transfer.caller_id: '0800' is not an E.164 number"),
        ("    knowledge: [{text: hello}]\n", "tenant 'acme-support': knowledge.0: an inline text needs a title"),
        ("    knowledge: [{path: kb/a.docx}]\n",
         "tenant 'acme-support': knowledge.0: 'kb/a.docx' is not a supported file type (.md, .markdown, .txt, .html, .htm, .pdf)"),
        ("    tools: [{name: end_call, description: d, http: {method: GET, url: 'https://x.test'}}]\n",
         "tenant 'acme-support': tools.0.name: 'end_call' is a built-in tool name"),
        ("    tools: [{name: t, description: d, http: {method: GET, url: 'ftp://x.test'}}]\n",
         "tenant 'acme-support': tools.0.http.url: 'ftp://x.test' is not an http(s) URL"),
        ("    tools: [{name: t, description: d, parameters: {type: 5}, http: {method: GET, url: 'https://x.test'}}]\n",
         "tenant 'acme-support': tools.0.parameters: not a valid JSON schema: 5 is not valid under any of the given schemas"),
        ("    credits: -1\n", "tenant 'acme-support': credits: Input should be greater than or equal to 0"),
    ],
)
def test_errors_name_the_tenant_and_the_key_path(extra: str, message: str) -> None:
    text = MINIMAL.replace("    credits: 5\n", "") + ("" if "credits" in extra else "    credits: 5\n") + extra
    assert error_of(text) == message


def test_missing_required_key_is_named() -> None:
    assert error_of(MINIMAL.replace("    greeting: Hi\n", "")) == "tenant 'acme-support': missing key 'greeting'"


def test_a_tenant_without_a_key_is_named_by_position() -> None:
    text = MINIMAL + "  - company: Other\n    greeting: Hi\n    credits: 1\n"
    assert error_of(text) == "tenant #2: missing key 'key'"


def test_a_number_routed_to_two_tenants_is_refused() -> None:
    text = MINIMAL + '    numbers: ["+15551230001"]\n' + (
        '  - key: other\n    company: O\n    greeting: Hi\n    credits: 1\n    numbers: ["+15551230001"]\n'
    )
    assert error_of(text) == "tenant 'other': numbers.0: '+15551230001' is already routed to tenant 'acme-support'"


def test_duplicate_tenant_keys_and_unknown_top_level_keys_are_refused() -> None:
    assert error_of(MINIMAL + MINIMAL.removeprefix("tenants:\n")) == (
        "tenant 'acme-support': key: 'acme-support' is defined twice in this file"
    )
    assert error_of(MINIMAL + "tenant_defaults: {}\n") == "tenant file: unknown key 'tenant_defaults'"


def test_yaml_syntax_errors_give_the_line() -> None:
    assert error_of("tenants:\n  - key: [unclosed\n").startswith("tenant file: YAML error at line 3")

"""Twilio's SharedKey signatures on the wire (protocols §2.6): a request announcing
`X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256` is checked with that key's secret
(TWILIO_WEBHOOK_SHARED_KEYS) and SHA-256, on the incoming-call webhook, the stream upgrade and the transfer
callbacks; an unknown key or algorithm is refused, counted and logged without any secret. Every request is
signed by the `twilio` SDK's own RequestValidator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from twilio.request_validator import HMAC_SHA256, RequestValidator

from switchboard.config import SettingsError, VoiceSettings, load_settings
from switchboard.fakes.realtime_server import function_call
from switchboard.simulator.twilio_caller import StreamRejected
from tests.bridge.harness import AUTH_TOKEN, SERVICE_TOKEN, VoiceStack, voice_stack

TENANT_NUMBER = "+15551230001"
CALLER = "+15557654321"
OLD_SECRET = "old-shared-key-secret-0123456789"
NEW_SECRET = "new-shared-key-secret-9876543210"
KEYS = f"KSold0001:{OLD_SECRET},KSnew0002:{NEW_SECRET}"
SECRETS = (OLD_SECRET, NEW_SECRET, AUTH_TOKEN)


def sample(stack: VoiceStack, name: str, labels: dict[str, str]) -> float:
    return stack.voice_app.state.metrics.registry.get_sample_value(name, labels) or 0.0


def assert_no_secret_in(logs: list[dict[str, Any]]) -> None:
    text = repr(logs)
    assert not any(secret in text for secret in SECRETS)


async def test_a_webhook_and_stream_signed_with_a_shared_key_and_sha256_carry_a_whole_call(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack, \
            stack.caller(shared_key=("KSnew0002", NEW_SECRET)) as caller:
        answer = await caller.place_call(to=TENANT_NUMBER, from_=CALLER)
        assert answer.status_code == 200 and answer.verbs == ("Connect",) and answer.stream_url
        session = await stack.model.wait_for_session(timeout_s=5)
        await caller.connect_stream()
        await session.wait_for_event("response.create", timeout_s=5)
        await caller.wait_for(lambda: caller.stream_ms > 0 and any(m.event == "media" for m in caller.received),
                              timeout_s=10)
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "answered"}) == 1
        await caller.hang_up()
        await session.wait_for_closed(timeout_s=5)


@pytest.mark.parametrize(("shared_key", "reason", "shared_key_id"), [
    (("KSnew0002", "not-the-right-secret-000000"), "bad_signature", "KSnew0002"),
    (("KSgone0003", NEW_SECRET), "unknown_shared_key", "KSgone0003"),
], ids=["wrong-secret", "unknown-key-id"])
async def test_a_webhook_signed_with_a_wrong_secret_or_an_unknown_key_is_403_counted_and_logged(
        tmp_path: Path, shared_key: tuple[str, str], reason: str, shared_key_id: str) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack, \
            stack.caller(shared_key=shared_key) as caller:
        with capture_logs() as logs:
            answer = await caller.place_call(to=TENANT_NUMBER, from_=CALLER)
        assert answer.status_code == 403 and answer.stream_url is None
        assert sample(stack, "switchboard_webhooks_total", {"outcome": reason}) == 1
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "answered"}) == 0
        [rejected] = [entry for entry in logs if entry["event"] == "webhook.rejected"]
        assert rejected["log_level"] == "warning"
        assert rejected["reason"] == reason and rejected["shared_key_id"] == shared_key_id
        assert rejected["algorithm"] == HMAC_SHA256
        assert_no_secret_in(logs)
        assert stack.model.sessions == []


async def test_an_unknown_algorithm_or_an_auth_token_signature_sold_as_sha256_is_refused(tmp_path: Path) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack, httpx.AsyncClient() as http:
        url = stack.voice_url + "/twilio-voice-webhook"
        params = {"AccountSid": "AC" + "0" * 32, "CallSid": "CA" + "1" * 32, "From": CALLER, "To": TENANT_NUMBER}
        with capture_logs() as logs:
            unknown_algorithm = await http.post(url, data=params, headers={
                "X-Twilio-Signature": RequestValidator(NEW_SECRET).compute_signature(url, params, HMAC_SHA256),
                "X-Twilio-Webhooks-Signature-Settings": "key=KSnew0002,algorithm=HMAC_SHA512"})
            # The Auth Token's SHA-1 signature is no SharedKey signature: the header decides what is checked.
            auth_token_signature = await http.post(url, data=params, headers={
                "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(url, params),
                "X-Twilio-Webhooks-Signature-Settings": "key=KSnew0002,algorithm=HMAC_SHA256"})
            no_key_id = await http.post(url, data=params, headers={
                "X-Twilio-Signature": RequestValidator(NEW_SECRET).compute_signature(url, params, HMAC_SHA256),
                "X-Twilio-Webhooks-Signature-Settings": "algorithm=HMAC_SHA256"})
        assert [r.status_code for r in (unknown_algorithm, auth_token_signature, no_key_id)] == [403, 403, 403]
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "unsupported_signature_algorithm"}) == 1
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "bad_signature"}) == 1
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "unknown_shared_key"}) == 1
        rejected = [entry for entry in logs if entry["event"] == "webhook.rejected"]
        assert [(e["reason"], e["algorithm"], e.get("shared_key_id")) for e in rejected] == [
            ("unsupported_signature_algorithm", "HMAC_SHA512", "KSnew0002"),
            ("bad_signature", HMAC_SHA256, "KSnew0002"),
            ("unknown_shared_key", HMAC_SHA256, None),
        ]
        assert_no_secret_in(logs)
        assert stack.model.sessions == []


async def test_during_a_rotation_either_key_works_and_requests_without_the_header_use_the_auth_token(
        tmp_path: Path) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack:
        async with stack.caller(shared_key=("KSold0001", OLD_SECRET)) as old, \
                stack.caller(shared_key=("KSnew0002", NEW_SECRET)) as new, stack.caller() as legacy:
            for caller in (old, new, legacy):
                answer = await caller.place_call(to=TENANT_NUMBER, from_=CALLER)
                assert answer.status_code == 200 and answer.stream_url, answer.twiml
        # A key's id with the other key's secret opens nothing.
        async with stack.caller(shared_key=("KSnew0002", OLD_SECRET)) as crossed:
            assert (await crossed.place_call(to=TENANT_NUMBER, from_=CALLER)).status_code == 403
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "answered"}) == 3
        assert sample(stack, "switchboard_webhooks_total", {"outcome": "bad_signature"}) == 1


async def test_the_stream_upgrade_signed_with_the_shared_key_opens_and_a_wrong_one_is_refused_before_accept(
        tmp_path: Path) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack, \
            stack.caller(shared_key=("KSold0001", OLD_SECRET)) as caller:
        await caller.place_call(to=TENANT_NUMBER, from_=CALLER)
        session = await stack.model.wait_for_session(timeout_s=5)
        refused: list[int] = []
        with capture_logs() as logs:
            for shared_key in (("KSold0001", NEW_SECRET), ("KSgone0003", OLD_SECRET)):
                caller.shared_key = shared_key
                with pytest.raises(StreamRejected) as rejection:
                    await caller.connect_stream()
                refused.append(rejection.value.status_code)
        assert refused == [403, 403]  # uvicorn's answer to a socket closed before accept
        assert sample(stack, "switchboard_streams_refused_total", {"reason": "bad_signature"}) == 1
        assert sample(stack, "switchboard_streams_refused_total", {"reason": "unknown_shared_key"}) == 1
        assert [(e["reason"], e["shared_key_id"]) for e in logs if e["event"] == "stream.rejected"] == [
            ("bad_signature", "KSold0001"), ("unknown_shared_key", "KSgone0003")]
        assert_no_secret_in(logs)
        assert session.events_of("input_audio_buffer.append") == []

        caller.shared_key = ("KSold0001", OLD_SECRET)
        await caller.connect_stream()
        await caller.wait_for(lambda: any(m.event == "media" for m in caller.received), timeout_s=10)
        assert sample(stack, "switchboard_preopen_sessions_total", {"outcome": "hit"}) == 1
        await caller.hang_up()


async def _transfer_action_url(stack: VoiceStack, caller: Any) -> str:
    """Answer a call, have the model hand it to a person, and return the `<Dial action>` URL."""
    await caller.place_call(to=TENANT_NUMBER, from_=CALLER)
    session = await stack.model.wait_for_session(timeout_s=5)
    await caller.connect_stream()
    await session.wait_for_sent("response.done", timeout_s=10)
    await caller.wait_for(lambda: len(caller.marks_echoed) > 0 and not caller.has_unplayed_audio, timeout_s=10)
    await session.start_response(function_call("transfer_to_human", {"reason": "damaged order", "summary": "x"}))
    request = await stack.twilio_rest.wait_for_request(timeout_s=10)
    dial = ElementTree.fromstring(request.form["Twiml"]).find("Dial")
    assert dial is not None
    return dial.get("action") or ""


async def test_transfer_callbacks_signed_with_the_shared_key_are_answered_and_an_unknown_key_is_refused(
        tmp_path: Path) -> None:
    async with voice_stack(tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=KEYS) as stack, \
            stack.caller(shared_key=("KSnew0002", NEW_SECRET)) as caller:
        stack.twilio_rest.human = "no-answer"
        stack.twilio_rest.shared_key = ("KSnew0002", NEW_SECRET)
        action_url = await _transfer_action_url(stack, caller)
        leg = await stack.twilio_rest.wait_for_dial(timeout_s=10)
        assert leg.action_status_code == 200 and "nobody is free" in (leg.action_twiml or "")
        [ticket] = await stack.tickets(caller.call_sid)
        assert ticket["kind"] == "callback"

        params = {"CallSid": caller.call_sid, "DialCallStatus": "no-answer", "DialBridged": "false"}
        with capture_logs() as logs:
            async with httpx.AsyncClient() as http:
                unknown_key = await http.post(action_url, data=params, headers={
                    "X-Twilio-Signature": RequestValidator(NEW_SECRET).compute_signature(
                        action_url, params, HMAC_SHA256),
                    "X-Twilio-Webhooks-Signature-Settings": "key=KSgone0003,algorithm=HMAC_SHA256"})
        assert unknown_key.status_code == 403
        [rejected] = [e for e in logs if e["event"] == "transfer.callback_rejected"]
        assert rejected["reason"] == "unknown_shared_key" and rejected["shared_key_id"] == "KSgone0003"
        assert_no_secret_in(logs)
        assert len(await stack.tickets(caller.call_sid)) == 1


@pytest.mark.parametrize("value", [
    "KS1",                                    # no secret at all
    f"KS1:{NEW_SECRET},KS2",                  # the second entry has none
    f":{NEW_SECRET}",                         # no key id
    "KS1:",                                   # an empty secret
    f"KS1:{OLD_SECRET},KS1:{NEW_SECRET}",     # one id twice
    f"KS 1:{NEW_SECRET}",                     # a blank inside the id
    f"KS1:{OLD_SECRET},,KS2:{NEW_SECRET}",    # an empty entry
    f"key=KS1:{NEW_SECRET}",                  # the header's syntax, not the setting's
], ids=["no-colon", "second-no-colon", "no-id", "empty-secret", "duplicate", "blank-in-id", "empty-entry",
        "header-syntax"])
def test_a_malformed_shared_keys_setting_names_itself_and_no_secret(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_WEBHOOK_SHARED_KEYS", value)
    with pytest.raises(SettingsError) as error:
        load_settings(VoiceSettings)
    message = str(error.value)
    assert message.startswith("setting TWILIO_WEBHOOK_SHARED_KEYS is invalid: ") and "\n" not in message
    assert OLD_SECRET not in message and NEW_SECRET not in message


def test_shared_keys_are_read_by_key_id_and_left_out_of_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_WEBHOOK_SHARED_KEYS", f" KSold0001:{OLD_SECRET} , KSnew0002:{NEW_SECRET}:x ")
    settings = load_settings(VoiceSettings)
    assert settings.webhook_shared_keys == {"KSold0001": OLD_SECRET, "KSnew0002": NEW_SECRET + ":x"}
    assert OLD_SECRET not in repr(settings)
    monkeypatch.setenv("TWILIO_WEBHOOK_SHARED_KEYS", "")
    assert load_settings(VoiceSettings).webhook_shared_keys == {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_voice_server_with_a_malformed_shared_keys_setting_stops_with_one_line(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN,
           "SWITCHBOARD_OUTBOX_DIR": str(tmp_path / "outbox"), "SWITCHBOARD_STATE_URL": "",
           "TWILIO_WEBHOOK_SHARED_KEYS": f"KSold0001:{OLD_SECRET},KSnew0002"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "serve", "voice", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            stderr = await process.stderr.read() if process.stderr is not None else b""
            return_code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert return_code == 2
    assert stderr.decode().splitlines() == [
        "switchboard: setting TWILIO_WEBHOOK_SHARED_KEYS is invalid: Value error, entry 2 is not <key id>:<secret>"]

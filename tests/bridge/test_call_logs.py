"""The log output of a whole call: every line JSON, call ids bound, no secret and no full phone number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from switchboard.logs import configure_logging, mask_phone
from tests.bridge.harness import API_KEY, AUTH_TOKEN, SERVICE_TOKEN, voice_stack, wait_until

CALLER = "+15557654321"


def test_mask_phone_keeps_country_prefix_and_last_four() -> None:
    assert mask_phone("+14155550123") == "+1******0123"
    assert mask_phone("") == ""


async def test_a_whole_call_logs_no_secret_and_no_full_phone_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "DEBUG", "production", secrets=[API_KEY, AUTH_TOKEN, SERVICE_TOKEN])
    try:
        async with voice_stack(tmp_path) as stack, stack.caller() as caller:
            await caller.place_call(to="+15551230001", from_=CALLER, extra_params={"CallerName": "Jo"})
            session = await stack.model.wait_for_session(timeout_s=5)
            await caller.connect_stream()
            await session.wait_for_event("response.create", timeout_s=5)
            await caller.send_raw("{broken")
            await caller.wait_for(lambda: caller.stream_ms >= 400, timeout_s=5)
            await caller.hang_up()
            await session.wait_for_closed(timeout_s=5)
            await wait_until(lambda: stack.voice_app.state.registry.live_count == 0)
    finally:
        structlog.reset_defaults()
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"webhook.answered", "call.started", "call.ended", "frame.rejected"} <= events
    ended = next(line for line in lines if line["event"] == "call.ended")
    assert ended["call_sid"] == caller.call_sid and ended["stream_sid"] == caller.stream_sid
    assert ended["end_reason"] == "caller_hung_up" and ended["caller_frames"] > 0
    started = next(line for line in lines if line["event"] == "call.started")
    assert started["caller"] == "+1******4321"
    for secret in (API_KEY, AUTH_TOKEN, SERVICE_TOKEN, CALLER, CALLER.lstrip("+")):
        assert secret not in output

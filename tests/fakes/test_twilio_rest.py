"""The fake Twilio REST API answers the real `twilio` SDK like Twilio does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from switchboard.fakes.loopback import LoopbackServer
from switchboard.fakes.twilio_rest import FakeTwilioRest

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "rest-auth-token"
CALL_SID = "CA" + "b2" * 16
# twilio 9.13's AsyncTwilioHttpClient passes aiohttp.BasicAuth as `auth=`, both deprecated in aiohttp 3.14.
pytestmark = [
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning"),
]

DIAL = '<Response><Dial callerId="+15551230001"><Number>+15559990000</Number></Dial></Response>'


@pytest.fixture
async def rest() -> AsyncIterator[FakeTwilioRest]:
    async with FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(rest: FakeTwilioRest) -> AsyncIterator[Client]:
    twilio = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
    twilio.api.base_url = rest.base_url
    yield twilio
    await twilio.http_client.close()  # type: ignore[attr-defined]


async def test_the_sdk_redirects_a_live_call_with_inline_twiml(rest: FakeTwilioRest, client: Client) -> None:
    call = await client.calls(CALL_SID).update_async(twiml=DIAL)
    assert call.sid == CALL_SID and call.status == "in-progress" and call.account_sid == ACCOUNT_SID

    request = await rest.wait_for_request()
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    assert request.form == {"Twiml": DIAL}
    assert request.is_authenticated and request.status_code == 200


async def test_hanging_up_then_redirecting_a_completed_call_fails_as_at_twilio(
    rest: FakeTwilioRest, client: Client
) -> None:
    call = await client.calls(CALL_SID).update_async(status="completed")
    assert call.status == "completed"
    assert rest.call_status(CALL_SID) == "completed"
    with pytest.raises(TwilioRestException) as raised:
        await client.calls(CALL_SID).update_async(twiml=DIAL)
    assert raised.value.status == 400 and raised.value.code == 21220
    assert [r.status_code for r in rest.requests] == [200, 400]


async def test_a_call_the_caller_already_ended(rest: FakeTwilioRest, client: Client) -> None:
    rest.complete_call(CALL_SID)
    fetched = await client.calls(CALL_SID).fetch_async()
    assert fetched.status == "completed"
    with pytest.raises(TwilioRestException) as raised:
        await client.calls(CALL_SID).update_async(twiml=DIAL)
    assert raised.value.code == 21220


async def test_wrong_credentials_get_401(rest: FakeTwilioRest) -> None:
    wrong = Client(ACCOUNT_SID, "not-the-token", http_client=AsyncTwilioHttpClient())
    wrong.api.base_url = rest.base_url
    try:
        with pytest.raises(TwilioRestException) as raised:
            await wrong.calls(CALL_SID).update_async(twiml=DIAL)
    finally:
        await wrong.http_client.close()  # type: ignore[attr-defined]
    assert raised.value.status == 401 and raised.value.code == 20003
    assert rest.requests[0].is_authenticated is False


async def test_twiml_over_4000_characters_is_refused(rest: FakeTwilioRest) -> None:
    async with httpx.AsyncClient(base_url=rest.base_url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        response = await http.post(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json",
                                   data={"Twiml": "<Response><Say>" + "a" * 4_000 + "</Say></Response>"})
    assert response.status_code == 400 and response.json()["code"] == 32018


async def test_update_hooks_see_accepted_updates(rest: FakeTwilioRest, client: Client) -> None:
    seen = []
    rest.on_update(lambda request: seen.append(request.form))
    await client.calls(CALL_SID).update_async(twiml=DIAL)
    assert seen == [{"Twiml": DIAL}]


@pytest.mark.parametrize(("human", "expected"), [("answers", "completed"), ("no-answer", "no-answer"), ("busy", "busy")])
async def test_a_redirect_to_dial_is_followed_as_twilio_does(rest: FakeTwilioRest, client: Client, human: str,
                                                             expected: str) -> None:
    """The fake rings the number, fetches the `<Number url>` when the person answers, then posts the `action`
    with DialCallStatus; every callback is signed over its exact URL and form, as Twilio signs."""
    seen: list[tuple[str, dict[str, str], bool]] = []
    validator = RequestValidator(AUTH_TOKEN)
    app = FastAPI()

    async def callback(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        signed = validator.validate(str(request.url), form, request.headers.get("X-Twilio-Signature", ""))
        seen.append((request.url.path, form, signed))
        twiml = "<Response><Say>Caller waiting</Say></Response>" if request.url.path == "/whisper/t1" \
            else "<Response><Hangup/></Response>"
        return Response(twiml, media_type="text/xml")

    app.add_api_route("/whisper/t1", callback, methods=["POST"])
    app.add_api_route("/action/t1", callback, methods=["POST"])
    rest.human = human
    async with LoopbackServer(app, name="dial-callbacks") as callbacks:
        base = callbacks.base_url
        twiml = (f'<Response><Dial action="{base}/action/t1" callerId="+15557654321" timeout="20">'
                 f'<Number url="{base}/whisper/t1">+15559990000</Number></Dial></Response>')
        await client.calls(CALL_SID).update_async(twiml=twiml)
        leg = await rest.wait_for_dial(timeout_s=5)

    assert (leg.number, leg.caller_id, leg.timeout_s, leg.dial_call_status) == (
        "+15559990000", "+15557654321", 20, expected)
    assert all(signed for _, _, signed in seen)
    paths = [path for path, _, _ in seen]
    assert paths == (["/whisper/t1", "/action/t1"] if human == "answers" else ["/action/t1"])
    action = seen[-1][1]
    assert action["CallSid"] == CALL_SID and action["DialCallStatus"] == expected
    assert action["DialBridged"] == ("true" if human == "answers" else "false")
    if human == "answers":
        assert seen[0][1]["ParentCallSid"] == CALL_SID and seen[0][1]["To"] == "+15559990000"
        assert leg.whisper_twiml is not None and "Caller waiting" in leg.whisper_twiml
    assert rest.call_status(CALL_SID) == "completed"  # the action's <Hangup/> ended the caller's leg

"""Twilio's REST API for a live call (transfer with `<Dial>`, complete), through the `twilio` SDK's
async client. Twilio exceptions become UpstreamError here; "already ended" counts as success.
"""

from __future__ import annotations

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from switchboard.errors import UpstreamProtocolError, UpstreamUnavailable
from switchboard.logs import get_logger

log = get_logger("switchboard.twilio_rest")

SERVICE = "twilio_rest"
# 21220: "Call is not in-progress. Cannot redirect." - the call has ended already.
CALL_NOT_IN_PROGRESS = 21220


class TwilioCallControl:
    def __init__(self, account_sid: str, auth_token: str, *, api_base_url: str, timeout_s: float) -> None:
        self._http = AsyncTwilioHttpClient(timeout=timeout_s)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        # The SDK has no base-URL setting; each domain keeps its root in base_url (tests use a fake).
        self._client.api.base_url = api_base_url.rstrip("/")

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the live call's TwiML (e.g. `<Dial>` to a human).

        Raises:
            UpstreamUnavailable: Twilio could not be reached or failed (retryable).
            UpstreamProtocolError: Twilio refused the request.
        """
        await self._update(call_sid, twiml=twiml)

    async def complete(self, call_sid: str) -> None:
        """Hang up the call; a call that has already ended is a success."""
        try:
            await self._update(call_sid, status="completed")
        except UpstreamProtocolError as exc:
            if getattr(exc, "twilio_code", None) != CALL_NOT_IN_PROGRESS:
                raise

    async def _update(self, call_sid: str, **fields: str) -> None:
        try:
            await self._client.calls(call_sid).update_async(**fields)
        except TwilioRestException as exc:
            error = UpstreamProtocolError(SERVICE, f"status {exc.status}, code {exc.code}", retryable=exc.status >= 500)
            error.twilio_code = exc.code  # type: ignore[attr-defined]
            raise error from None
        except (TwilioException, OSError, TimeoutError):
            raise UpstreamUnavailable(SERVICE, "request failed", retryable=True) from None
        except Exception as exc:  # aiohttp's errors: translated here, nothing above imports aiohttp
            if type(exc).__module__.startswith("aiohttp"):
                raise UpstreamUnavailable(SERVICE, "request failed", retryable=True) from None
            raise

    async def aclose(self) -> None:
        await self._http.close()

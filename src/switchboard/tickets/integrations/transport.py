"""One outgoing request to a tenant-configured URL: SSRF guard, pinned address, bounded time, no redirects.

The only module of the integrations that touches httpx; its exceptions become `OutboundFailure` here,
with no URL in the message (a URL may hold an expanded secret).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from switchboard.outbound_http import (
    DestinationRefused,
    DestinationUnresolved,
    MissingVariable,
    Resolver,
    check_destination,
)
from switchboard.tickets.integrations.policy import AttemptResult, parse_retry_after

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status_code: int
    headers: httpx.Headers
    body: bytes  # at most MAX_ANSWER_BYTES


class OutboundFailure(Exception):
    """No HTTP answer. `is_ambiguous`: the request may have been received; `is_refused`: the guard said no."""

    def __init__(self, message: str, *, is_ambiguous: bool = False, is_refused: bool = False) -> None:
        super().__init__(message)
        self.is_ambiguous = is_ambiguous
        self.is_refused = is_refused


def build_delivery_http_client(concurrency: int) -> httpx.AsyncClient:
    """Redirects are never followed (a 3xx is a failure, and could lead past the address check)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(15.0),
        limits=httpx.Limits(max_connections=max(10, concurrency * 2), max_keepalive_connections=concurrency),
        follow_redirects=False,
        trust_env=False,
    )


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, headers: Mapping[str, str], content: bytes | None,
    allow_private_network: bool, timeout_s: float, resolver: Resolver,
    params: Mapping[str, str] | None = None, auth: tuple[str, str] | None = None,
) -> HttpAnswer:
    """Send one request within timeout_s (DNS included).

    Raises:
        OutboundFailure: refused address, unresolved host, connection failure or timeout.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await check_destination(
                host, port, allow_private_network=allow_private_network, resolver=resolver, timeout_s=timeout_s
            )
            pinned = parsed.copy_with(host=addresses[0])
            request_headers = {"Host": parsed.netloc.decode("ascii"), **headers}
            extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
            request = client.build_request(
                method, pinned, headers=request_headers, content=content, params=params,
                timeout=httpx.Timeout(timeout_s), extensions=extensions,
            )
            if auth is not None:
                request = next(httpx.BasicAuth(*auth).auth_flow(request))
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body.extend(piece)
                    if len(body) >= MAX_ANSWER_BYTES:
                        break
            finally:
                await response.aclose()
    except DestinationRefused as exc:
        raise OutboundFailure(f"refused: {exc}; set allow_private_network: true to allow it", is_refused=True) from None
    except DestinationUnresolved as exc:
        raise OutboundFailure(str(exc)) from None
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
        raise OutboundFailure(f"could not connect to {host}") from None
    except (TimeoutError, httpx.TimeoutException):
        raise OutboundFailure(f"no answer within {timeout_s:g} s", is_ambiguous=True) from None
    except httpx.HTTPError as exc:
        raise OutboundFailure(f"connection to {host} failed ({type(exc).__name__})", is_ambiguous=True) from None
    return HttpAnswer(response.status_code, response.headers, bytes(body[:MAX_ANSWER_BYTES]))


def answer_text(answer: HttpAnswer, limit: int = 500) -> str:
    """The peer's answer body as text for a recorded error, trimmed."""
    text = answer.body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


# What an attempt that did not succeed records: the same for webhooks and every helpdesk.
def unconfigured(exc: MissingVariable) -> AttemptResult:
    """A `${VAR}` of the tenant file is not in the App server's environment: no retry helps, an operator must."""
    return AttemptResult(None, error=f"the App server has no environment variable {exc.name}",
                         is_configuration_error=True)


def not_sent(exc: OutboundFailure, prefix: str = "") -> AttemptResult:
    """No HTTP answer (`send` raised)."""
    return AttemptResult(None, error=f"{prefix}{exc}", is_ambiguous=exc.is_ambiguous,
                         is_configuration_error=exc.is_refused)


def refused(answer: HttpAnswer, error: str) -> AttemptResult:
    """A non-2xx answer: the peer's Retry-After kept; a 5xx is ambiguous (the peer may have acted)."""
    return AttemptResult(answer.status_code, error=error,
                         retry_after_s=parse_retry_after(answer.headers.get("retry-after")),
                         is_ambiguous=answer.status_code >= 500)

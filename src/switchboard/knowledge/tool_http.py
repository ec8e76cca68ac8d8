"""Run a tenant's HTTP tool: expand ${VAR} headers, refuse private addresses, call with a bounded time.

The only module that touches httpx or DNS; its exceptions become `ToolCallFailed` here. The URL is
pinned to the address that passed the check, so a DNS answer cannot change between check and connect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from switchboard.knowledge.errors import ToolCallFailed
from switchboard.knowledge.repository import ToolDefinition
from switchboard.outbound_http import (
    DestinationRefused,
    DestinationUnresolved,
    MissingVariable,
    Resolver,
    check_destination,
    is_public_address,
    resolve_addresses,
)
from switchboard.outbound_http import expand_variables as expand_env

__all__ = ["MAX_RESULT_BYTES", "ToolResponse", "build_tool_http_client", "call_http_tool", "is_public_address"]

MAX_RESULT_BYTES = 4096
MAX_READ_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ToolResponse:
    status_code: int
    body: str  # trimmed to MAX_RESULT_BYTES of UTF-8

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


def build_tool_http_client() -> httpx.AsyncClient:
    """One client per app. Redirects are not followed: a redirect could lead past the address check."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        follow_redirects=False,
        trust_env=False,
    )


def expand_variables(template: str, environ: Mapping[str, str], tool: str) -> str:
    """Replace ${VAR} from `environ`.

    Raises:
        ToolCallFailed: a variable is not set (not retryable: the operator must set it).
    """
    try:
        return expand_env(template, environ)
    except MissingVariable as exc:
        raise ToolCallFailed(tool, f"the AI server has no environment variable {exc.name}", retryable=False) from None


def _query_params(arguments: Mapping[str, Any]) -> dict[str, str]:
    params = {}
    for key, value in arguments.items():
        if isinstance(value, str):
            params[key] = value
        elif isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            params[key] = str(value)
        elif value is not None:
            params[key] = json.dumps(value, separators=(",", ":"))
    return params


def trim_for_model(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_RESULT_BYTES:
        return text
    return encoded[:MAX_RESULT_BYTES].decode("utf-8", errors="ignore") + " …[truncated]"


async def call_http_tool(
    client: httpx.AsyncClient,
    tool: ToolDefinition,
    arguments: Mapping[str, Any],
    environ: Mapping[str, str],
    resolver: Resolver = resolve_addresses,
) -> ToolResponse:
    """Call the tool's endpoint with the model's arguments (JSON body, or query parameters for GET/DELETE).

    Raises:
        ToolCallFailed: refused address, missing variable, timeout or connection failure.
    """
    http = tool.http
    timeout_s = float(http.get("timeout_s", 10.0))
    url = httpx.URL(expand_variables(str(http["url"]), environ, tool.name))
    headers = {name: expand_variables(value, environ, tool.name) for name, value in http.get("headers", {}).items()}
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await check_destination(
            host, port, allow_private_network=bool(http.get("allow_private_network", False)), resolver=resolver,
            timeout_s=timeout_s,
        )
    except DestinationUnresolved:
        raise ToolCallFailed(tool.name, f"cannot resolve host {host}", retryable=True) from None
    except DestinationRefused as exc:
        raise ToolCallFailed(
            tool.name, f"refused: {exc}; set http.allow_private_network: true to allow it", retryable=False
        ) from None
    pinned = url.copy_with(host=addresses[0])
    headers.setdefault("Host", url.netloc.decode("ascii"))
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    method = str(http["method"]).upper()
    request_kwargs: dict[str, Any] = (
        {"params": _query_params(arguments)} if method in ("GET", "DELETE") else {"json": dict(arguments)}
    )
    request = client.build_request(
        method, pinned, headers=headers, timeout=httpx.Timeout(timeout_s), extensions=extensions, **request_kwargs
    )
    try:
        # The total bound: httpx's timeouts are per operation, a slow trickle of bytes could outlast them.
        async with asyncio.timeout(timeout_s):
            response = await client.send(request, stream=True)
            try:
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body.extend(piece)
                    if len(body) >= MAX_READ_BYTES:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        raise ToolCallFailed(tool.name, f"no answer within {timeout_s:g} s", retryable=True) from None
    except httpx.TimeoutException:
        raise ToolCallFailed(tool.name, f"no answer within {timeout_s:g} s", retryable=True) from None
    except httpx.TransportError:
        # from None: the cause may carry the URL, whose query could hold an expanded secret.
        raise ToolCallFailed(tool.name, f"could not connect to {host}", retryable=True) from None
    return ToolResponse(status_code=response.status_code, body=trim_for_model(bytes(body)))

"""build_http_client(): an httpx.AsyncClient with every timeout and limit set."""

from __future__ import annotations

import httpx


def build_http_client(
    *, base_url: str = "", timeout_s: float = 5.0, connect_timeout_s: float = 2.0, bearer_token: str | None = None,
    max_connections: int = 100, transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
        transport=transport,
    )

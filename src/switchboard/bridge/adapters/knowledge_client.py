"""The voice server's client for the AI server (tenants, call profiles, tools, knowledge).

Every call has a timeout; httpx errors become the project's UpstreamError family here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from switchboard.errors import TenantNotFound, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

SERVICE = "ai_server"


@dataclass(frozen=True, slots=True)
class TenantRoute:
    bot_profile_key: str
    credits: int
    has_credits: bool


@dataclass(frozen=True, slots=True)
class CallProfile:
    bot_profile_key: str
    company: str
    greeting: str
    instructions: str
    voice: dict[str, Any]
    transcriber: str = "none"
    transfer: dict[str, str] | None = None
    has_credits: bool = True
    credits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class KnowledgeClient:
    def __init__(self, http_client: httpx.AsyncClient) -> None:
        self._http = http_client

    async def _post(self, path: str, body: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        try:
            kwargs: dict[str, Any] = {"json": body}
            if timeout_s is not None:
                kwargs["timeout"] = timeout_s
            response = await self._http.post(path, **kwargs)
        except httpx.TimeoutException:
            raise UpstreamTimeout(SERVICE, path, retryable=True) from None
        except httpx.HTTPError:
            raise UpstreamUnavailable(SERVICE, path, retryable=True) from None
        if response.status_code == 404:
            raise TenantNotFound(path)
        if response.status_code >= 500:
            raise UpstreamUnavailable(SERVICE, f"{path} answered {response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise UpstreamProtocolError(SERVICE, f"{path} answered {response.status_code}", retryable=False)
        try:
            data = response.json()
        except ValueError:
            raise UpstreamProtocolError(SERVICE, f"{path} answered non-JSON", retryable=False) from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(SERVICE, f"{path} answered a non-object", retryable=False)
        return data

    async def resolve_tenant(self, *, sip_domain: str | None, to: str | None, application_sid: str | None) -> TenantRoute:
        """Raises: TenantNotFound when no tenant matches; UpstreamError when the AI server fails."""
        data = await self._post(
            "/voiceagent/resolve_tenant/", {"sip_domain": sip_domain, "to": to, "application_sid": application_sid}
        )
        return TenantRoute(
            bot_profile_key=str(data["bot_profile_key"]), credits=int(data.get("credits", 0)),
            has_credits=bool(data.get("has_credits", True)),
        )

    async def call_profile(
        self, *, bot_profile_key: str, caller_number: str, is_sip_call: bool, call_sid: str
    ) -> CallProfile:
        data = await self._post(
            "/voiceagent/call_profile/",
            {"bot_profile_key": bot_profile_key, "caller_number": caller_number, "is_sip_call": is_sip_call,
             "call_sid": call_sid},
        )
        known = {"bot_profile_key", "company", "greeting", "instructions", "voice", "transcriber", "transfer",
                 "has_credits", "credits"}
        return CallProfile(
            bot_profile_key=str(data["bot_profile_key"]), company=str(data.get("company", "")),
            greeting=str(data.get("greeting", "")), instructions=str(data.get("instructions", "")),
            voice=dict(data.get("voice") or {"provider": "openai", "name": "marin", "speed": 1.0}),
            transcriber=str(data.get("transcriber", "none")), transfer=data.get("transfer"),
            has_credits=bool(data.get("has_credits", True)), credits=int(data.get("credits", 0)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    async def available_tools(self, bot_profile_key: str) -> list[dict[str, Any]]:
        data = await self._post("/voiceagent/get_available_tools/", {"bot_profile_key": bot_profile_key})
        tools = data.get("tools") or []
        return [dict(t) for t in tools if isinstance(t, dict)]

    async def search_knowledge(self, bot_profile_key: str, query: str, *, top_k: int = 3,
                               timeout_s: float | None = None) -> dict[str, Any]:
        return await self._post(
            "/voiceagent/search_knowledge_base/", {"bot_profile_key": bot_profile_key, "query": query, "top_k": top_k},
            timeout_s=timeout_s,
        )

    async def execute_tool(self, bot_profile_key: str, name: str, arguments: dict[str, Any], call_sid: str,
                           *, timeout_s: float | None = None) -> dict[str, Any]:
        return await self._post(
            "/voiceagent/execute_tool/",
            {"bot_profile_key": bot_profile_key, "name": name, "arguments": arguments, "call_sid": call_sid},
            timeout_s=timeout_s,
        )

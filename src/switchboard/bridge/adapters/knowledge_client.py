"""The voice server's client for the AI server (tenants, call profiles, tools, knowledge, call charges).

Every call has a timeout; httpx errors become the project's UpstreamError family here. A short-lived
`ProfileCache` of the last good answers lets a call start while the AI server is down (the
`*_or_cached` methods); nothing else is cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx

from switchboard.clock import Clock, SystemClock
from switchboard.errors import (
    TenantNotFound,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from switchboard.logs import get_logger

SERVICE = "ai_server"
DEFAULT_PROFILE_CACHE_TTL_S = 300.0
DEFAULT_CACHE_MAX_ENTRIES = 1_000
CHARGE_TIMEOUT_S = 5.0

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TenantRoute:
    bot_profile_key: str
    credits: int
    has_credits: bool
    from_cache: bool = False  # True: the AI server was down and this is the last good answer
    max_concurrent_calls: int | None = None  # across all voice servers; None: no limit


@dataclass(frozen=True, slots=True)
class CallProfile:
    bot_profile_key: str
    company: str
    greeting: str
    instructions: str
    voice: dict[str, Any]
    transcriber: str = "none"
    transfer: dict[str, Any] | None = None
    has_credits: bool = True
    credits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # True: the AI server was down and this is a degraded copy of an earlier call's profile
    # (see KnowledgeClient.call_profile_or_cached).
    from_cache: bool = False


@dataclass(frozen=True, slots=True)
class _Caller:
    caller_number: str
    is_sip_call: bool
    call_sid: str


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _ExpiringMap(Generic[_K, _V]):
    """Values kept `ttl_s` seconds from when they were put; the oldest go first beyond `max_entries`."""

    def __init__(self, clock: Clock, ttl_s: float, max_entries: int) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[_K, tuple[float, _V]] = {}

    def put(self, key: _K, value: _V) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock.now(), value)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def get(self, key: _K) -> tuple[_V, float] | None:
        """The value and its age in seconds, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age_s = self._clock.now() - entry[0]
        if age_s >= self._ttl_s:
            del self._entries[key]
            return None
        return entry[1], age_s

    def discard(self, key: _K) -> None:
        self._entries.pop(key, None)


class ProfileCache:
    """The AI server's last good answers: routes per (sip_domain, to, application_sid), and call
    profiles and tool lists per tenant, each kept `ttl_s` seconds (monotonic, from `clock`) after
    the answer arrived.

    Only `KnowledgeClient`'s `*_or_cached` methods read it, and only when the AI server cannot
    answer. What it returns is as of the moment it was stored: credits, and in a call profile the
    business hours' "open now" and local time.
    """

    def __init__(
        self, clock: Clock, *, ttl_s: float = DEFAULT_PROFILE_CACHE_TTL_S,
        max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
    ) -> None:
        self.ttl_s = ttl_s
        self.routes: _ExpiringMap[tuple[str | None, str | None, str | None], TenantRoute] = _ExpiringMap(
            clock, ttl_s, max_entries
        )
        self.profiles: _ExpiringMap[str, tuple[CallProfile, _Caller]] = _ExpiringMap(clock, ttl_s, max_entries)
        self.tools: _ExpiringMap[str, list[dict[str, Any]]] = _ExpiringMap(clock, ttl_s, max_entries)


def _for_another_caller(instructions: str, was: _Caller, now: _Caller) -> str:
    """Put this call's caller into instructions built for an earlier one: the earlier caller's number
    and call SID must never reach this call's model."""
    for old, new in [
        (was.caller_number, now.caller_number),
        (was.call_sid, now.call_sid),
        (f"is_sip_call={str(was.is_sip_call).lower()}", f"is_sip_call={str(now.is_sip_call).lower()}"),
    ]:
        if old:
            instructions = instructions.replace(old, new)
    return instructions


class KnowledgeClient:
    """The AI server's internal API (docs/internal-api.md) over `http_client` (base URL and bearer token set).

    `cache` defaults to a `ProfileCache` on the system clock with a 300 s TTL.
    """

    def __init__(self, http_client: httpx.AsyncClient, *, cache: ProfileCache | None = None) -> None:
        self._http = http_client
        self._cache = cache if cache is not None else ProfileCache(SystemClock())

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
        route_key = (sip_domain, to, application_sid)
        try:
            data = await self._post(
                "/voiceagent/resolve_tenant/", {"sip_domain": sip_domain, "to": to, "application_sid": application_sid}
            )
        except TenantNotFound:
            self._cache.routes.discard(route_key)
            raise
        route = TenantRoute(
            bot_profile_key=str(data["bot_profile_key"]), credits=int(data.get("credits", 0)),
            has_credits=bool(data.get("has_credits", True)),
            max_concurrent_calls=_positive_int_or_none(data.get("max_concurrent_calls")),
        )
        self._cache.routes.put(route_key, route)
        return route

    async def resolve_tenant_or_cached(
        self, *, sip_domain: str | None, to: str | None, application_sid: str | None
    ) -> TenantRoute:
        """`resolve_tenant`, or while the AI server is down the last good answer for exactly this
        (sip_domain, to, application_sid), younger than the cache's TTL, with `from_cache=True`.
        Its credits are as of then.

        Raises: TenantNotFound (never answered from the cache); the UpstreamError when nothing fresh is cached.
        """
        try:
            return await self.resolve_tenant(sip_domain=sip_domain, to=to, application_sid=application_sid)
        except UpstreamError as exc:
            cached = self._cache.routes.get((sip_domain, to, application_sid))
            if cached is None:
                raise
            route, age_s = cached
            _log_cached("resolve_tenant", route.bot_profile_key, age_s, exc)
            return replace(route, from_cache=True)

    async def call_profile(
        self, *, bot_profile_key: str, caller_number: str, is_sip_call: bool, call_sid: str
    ) -> CallProfile:
        """Raises: TenantNotFound; UpstreamError when the AI server fails."""
        try:
            data = await self._post(
                "/voiceagent/call_profile/",
                {"bot_profile_key": bot_profile_key, "caller_number": caller_number, "is_sip_call": is_sip_call,
                 "call_sid": call_sid},
            )
        except TenantNotFound:
            self._cache.profiles.discard(bot_profile_key)
            self._cache.tools.discard(bot_profile_key)
            raise
        known = {"bot_profile_key", "company", "greeting", "instructions", "voice", "transcriber", "transfer",
                 "has_credits", "credits"}
        profile = CallProfile(
            bot_profile_key=str(data["bot_profile_key"]), company=str(data.get("company", "")),
            greeting=str(data.get("greeting", "")), instructions=str(data.get("instructions", "")),
            voice=dict(data.get("voice") or {"provider": "openai", "name": "marin", "speed": 1.0}),
            transcriber=str(data.get("transcriber", "none")), transfer=data.get("transfer"),
            has_credits=bool(data.get("has_credits", True)), credits=int(data.get("credits", 0)),
            extra={k: v for k, v in data.items() if k not in known},
        )
        self._cache.profiles.put(bot_profile_key, (profile, _Caller(caller_number, is_sip_call, call_sid)))
        return profile

    async def call_profile_or_cached(
        self, *, bot_profile_key: str, caller_number: str, is_sip_call: bool, call_sid: str
    ) -> CallProfile:
        """`call_profile`, or while the AI server is down a degraded copy of the tenant's last good
        profile (younger than the cache's TTL) with `from_cache=True`.

        Degraded because the AI server built its instructions for an earlier call: this call's caller
        number, call SID and is_sip_call are put in place of that call's, but the business hours'
        local time and "open now" (and `extra["is_open_now"]`), and the credits, are as of then.

        Raises: TenantNotFound (never answered from the cache); the UpstreamError when nothing fresh is cached.
        """
        try:
            return await self.call_profile(
                bot_profile_key=bot_profile_key, caller_number=caller_number, is_sip_call=is_sip_call,
                call_sid=call_sid,
            )
        except UpstreamError as exc:
            cached = self._cache.profiles.get(bot_profile_key)
            if cached is None:
                raise
            (profile, was), age_s = cached
            _log_cached("call_profile", bot_profile_key, age_s, exc)
            instructions = _for_another_caller(
                profile.instructions, was, _Caller(caller_number, is_sip_call, call_sid)
            )
            return replace(profile, instructions=instructions, from_cache=True)

    async def available_tools(self, bot_profile_key: str) -> list[dict[str, Any]]:
        """The tool schemas for the model session. Raises: TenantNotFound; UpstreamError."""
        try:
            data = await self._post("/voiceagent/get_available_tools/", {"bot_profile_key": bot_profile_key})
        except TenantNotFound:
            self._cache.tools.discard(bot_profile_key)
            raise
        tools = data.get("tools") or []
        schemas = [dict(t) for t in tools if isinstance(t, dict)]
        self._cache.tools.put(bot_profile_key, [dict(t) for t in schemas])
        return schemas

    async def available_tools_or_cached(self, bot_profile_key: str) -> list[dict[str, Any]]:
        """`available_tools`, or while the AI server is down the tenant's last good list (younger than
        the cache's TTL). Tenant tools still run through the AI server, so they fail while it is down.

        Raises: TenantNotFound; the UpstreamError when nothing fresh is cached.
        """
        try:
            return await self.available_tools(bot_profile_key)
        except UpstreamError as exc:
            cached = self._cache.tools.get(bot_profile_key)
            if cached is None:
                raise
            tools, age_s = cached
            _log_cached("available_tools", bot_profile_key, age_s, exc)
            return [dict(t) for t in tools]

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

    async def charge_call(
        self, *, bot_profile_key: str, call_sid: str, duration_s: float, timeout_s: float = CHARGE_TIMEOUT_S
    ) -> dict[str, Any]:
        """Charge a finished call's minutes to its tenant; safe to retry, the AI server charges a call_sid once.

        Returns `{"bot_profile_key", "call_sid", "minutes", "credits_remaining", "already_charged"}`;
        `already_charged` is True when an earlier request charged this call (then `minutes` is that
        charge's). `timeout_s` bounds the whole request.

        Raises: TenantNotFound; UpstreamTimeout after `timeout_s`; UpstreamError when the AI server fails.
        """
        path = "/voiceagent/charge_call/"
        try:
            async with asyncio.timeout(timeout_s):
                data = await self._post(
                    path, {"bot_profile_key": bot_profile_key, "call_sid": call_sid, "duration_s": duration_s},
                    timeout_s=timeout_s,
                )
        except TimeoutError:
            raise UpstreamTimeout(SERVICE, path, retryable=True) from None
        expected = {"bot_profile_key": str, "call_sid": str, "minutes": int, "credits_remaining": int,
                    "already_charged": bool}
        if any(not isinstance(data.get(name), kind) for name, kind in expected.items()):
            raise UpstreamProtocolError(SERVICE, f"{path} answered an unexpected body", retryable=False)
        return {name: data[name] for name in expected}


def _positive_int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _log_cached(what: str, bot_profile_key: str, age_s: float, error: UpstreamError) -> None:
    log.warning(
        "ai_server.answered_from_cache", what=what, tenant=bot_profile_key, age_s=round(age_s, 1),
        error=type(error).__name__,
    )

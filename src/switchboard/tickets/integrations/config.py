"""Each tenant's integrations as the AI server serves them, and the App server's cache of them.

The AI server owns tenant configuration; `IntegrationsDirectory.run()` polls
`GET /voiceagent/integrations/` every `refresh_s` with `If-None-Match`, so a `tenants load` reaches a
running App server within one interval, and an AI server that is down leaves the last known
configuration in place. Values keep `${VAR}` unexpanded: senders expand them when they send.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from switchboard.logs import get_logger

log = get_logger("switchboard.tickets.integrations")

WEBHOOK = "webhook"
FRESHDESK = "freshdesk"
ZENDESK = "zendesk"
HELPDESKS = (FRESHDESK, ZENDESK)


def safe_label(url: str) -> str:
    """The URL without credentials, query or fragment: what logs and the stats view may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    url: str
    secret: str
    events: frozenset[str]
    allow_private_network: bool

    kind = WEBHOOK

    @property
    def endpoint_key(self) -> str:
        # A hash, not the URL: a URL may carry a token in its query, and keys appear in the API.
        return "webhook:" + hashlib.sha256(self.url.encode()).hexdigest()[:24]

    @property
    def label(self) -> str:
        return safe_label(self.url)


@dataclass(frozen=True, slots=True)
class FreshdeskAccount:
    domain: str
    api_key: str
    base_url: str | None
    allow_private_network: bool

    kind = FRESHDESK
    endpoint_key = FRESHDESK

    @property
    def api_base_url(self) -> str:
        return self.base_url or f"https://{self.domain}.freshdesk.com"

    @property
    def label(self) -> str:
        return f"freshdesk:{self.domain}"


@dataclass(frozen=True, slots=True)
class ZendeskAccount:
    subdomain: str
    email: str
    api_token: str
    base_url: str | None
    allow_private_network: bool

    kind = ZENDESK
    endpoint_key = ZENDESK

    @property
    def api_base_url(self) -> str:
        return self.base_url or f"https://{self.subdomain}.zendesk.com"

    @property
    def label(self) -> str:
        return f"zendesk:{self.subdomain}"


Endpoint = WebhookEndpoint | FreshdeskAccount | ZendeskAccount


@dataclass(frozen=True, slots=True)
class TenantIntegrations:
    webhooks: tuple[WebhookEndpoint, ...] = ()
    freshdesk: FreshdeskAccount | None = None
    zendesk: ZendeskAccount | None = None

    def endpoints_for(self, event_type: str) -> list[Endpoint]:
        """Webhooks subscribed to the event; for `ticket.created`, also each helpdesk."""
        endpoints: list[Endpoint] = [w for w in self.webhooks if event_type in w.events]
        if event_type == "ticket.created":
            endpoints += [h for h in (self.freshdesk, self.zendesk) if h is not None]
        return endpoints

    def endpoint(self, endpoint_key: str) -> Endpoint | None:
        candidates: list[Endpoint] = [*self.webhooks, *(h for h in (self.freshdesk, self.zendesk) if h is not None)]
        return next((e for e in candidates if e.endpoint_key == endpoint_key), None)


def parse_tenant_integrations(raw: Mapping[str, Any]) -> TenantIntegrations:
    """From the AI server's JSON (validated there at load; a malformed entry is a KeyError/TypeError here)."""
    webhooks = tuple(
        WebhookEndpoint(
            url=str(w["url"]), secret=str(w["secret"]), events=frozenset(str(e) for e in w["events"]),
            allow_private_network=bool(w.get("allow_private_network", False)),
        )
        for w in raw.get("webhooks") or []
    )
    fd = raw.get("freshdesk")
    zd = raw.get("zendesk")
    return TenantIntegrations(
        webhooks=webhooks,
        freshdesk=None if not fd else FreshdeskAccount(
            domain=str(fd["domain"]), api_key=str(fd["api_key"]), base_url=fd.get("base_url"),
            allow_private_network=bool(fd.get("allow_private_network", False)),
        ),
        zendesk=None if not zd else ZendeskAccount(
            subdomain=str(zd["subdomain"]), email=str(zd["email"]), api_token=str(zd["api_token"]),
            base_url=zd.get("base_url"), allow_private_network=bool(zd.get("allow_private_network", False)),
        ),
    )


class IntegrationsDirectory:
    """The App server's cached copy of every tenant's integrations, refreshed from the AI server."""

    def __init__(
        self, http: httpx.AsyncClient, *, ai_server_url: str, service_token: str, refresh_s: float,
        request_timeout_s: float = 5.0,
    ) -> None:
        self._http = http
        self._url = ai_server_url.rstrip("/") + "/voiceagent/integrations/"
        self._headers = {"Authorization": f"Bearer {service_token}"}
        self._refresh_s = refresh_s
        self._timeout = httpx.Timeout(request_timeout_s)
        self._tenants: dict[str, TenantIntegrations] = {}
        self._etag: str | None = None
        self._is_unavailable = False
        self._loaded = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def is_loaded(self) -> bool:
        """True once one answer came from the AI server; until then nobody knows who has integrations."""
        return self._loaded.is_set()

    @property
    def version(self) -> str | None:
        return self._etag

    def get(self, tenant: str) -> TenantIntegrations | None:
        return self._tenants.get(tenant)

    def tenants(self) -> dict[str, TenantIntegrations]:
        return dict(self._tenants)

    async def refresh(self) -> bool:
        """Fetch once; return whether the configuration changed. Raises nothing: a failure is logged."""
        headers = dict(self._headers)
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        try:
            response = await self._http.get(self._url, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            self._unavailable(error_type=type(exc).__name__)
            return False
        if response.status_code not in (200, 304):
            self._unavailable(status_code=response.status_code)
            return False
        if self._is_unavailable:
            self._is_unavailable = False
            log.info("integrations.config_available")
        if response.status_code == 304:
            return False
        try:
            payload = response.json()
            tenants = {key: parse_tenant_integrations(raw) for key, raw in payload["tenants"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("integrations.config_malformed")
            return False
        self._tenants = tenants
        self._etag = response.headers.get("etag")
        self._loaded.set()
        log.info("integrations.config_loaded", tenants=len(tenants), version=self._etag)
        return True

    def _unavailable(self, **fields: object) -> None:
        # Once per outage: the last known configuration stays in use meanwhile.
        if not self._is_unavailable:
            self._is_unavailable = True
            log.warning("integrations.config_unavailable", has_configuration=self.is_loaded, **fields)

    async def wait_until_loaded(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._loaded.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """End `run()` after the request in flight (if any); never blocks."""
        self._stopping.set()

    async def run(self) -> None:
        """Refresh every refresh_s until `stop()`."""
        while not self._stopping.is_set():
            await self.refresh()
            try:
                async with asyncio.timeout(self._refresh_s):
                    await self._stopping.wait()
            except TimeoutError:
                pass

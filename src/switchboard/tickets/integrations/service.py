"""The integrations of one App server: configuration cache, event recorder and delivery worker, wired once.

`running()` is entered by the App server's lifespan: it starts the configuration refresh, the worker
and the retention (deleting old finished rows) in one TaskGroup, and on the way out lets attempts in
flight finish (bounded) before cancelling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.config import AppSettings
from switchboard.outbound_http import Resolver, resolve_addresses
from switchboard.tickets.integrations.config import IntegrationsDirectory
from switchboard.tickets.integrations.delivery import DeliveryWorker
from switchboard.tickets.integrations.events import EventRecorder
from switchboard.tickets.integrations.metrics import DeliveryMetrics
from switchboard.tickets.integrations.queue import DeliveryOptions
from switchboard.tickets.integrations.retention import DeliveryRetention
from switchboard.tickets.integrations.transport import build_delivery_http_client

STOP_TIMEOUT_S = 5.0


@dataclass
class IntegrationsService:
    directory: IntegrationsDirectory
    recorder: EventRecorder
    worker: DeliveryWorker
    retention: DeliveryRetention
    delivery_http: httpx.AsyncClient
    config_http: httpx.AsyncClient

    @classmethod
    def build(
        cls, settings: AppSettings, *, sessions: async_sessionmaker[AsyncSession], clock: Clock,
        registry: CollectorRegistry, environ: Mapping[str, str], resolver: Resolver | None = None,
        ai_transport: httpx.AsyncBaseTransport | None = None,
    ) -> IntegrationsService:
        """`ai_transport` reaches the AI server in-process (tests); by default, AI_SERVER_URL over the network."""
        config_http = httpx.AsyncClient(transport=ai_transport, trust_env=False, timeout=httpx.Timeout(5.0))
        directory = IntegrationsDirectory(
            config_http, ai_server_url=settings.ai_server_url, service_token=settings.switchboard_service_token,
            refresh_s=settings.integrations_refresh_s,
        )
        delivery_http = build_delivery_http_client(settings.delivery_concurrency)
        options = DeliveryOptions(
            poll_s=settings.delivery_poll_s, timeout_s=settings.delivery_timeout_s, lease_s=settings.delivery_lease_s,
            concurrency=settings.delivery_concurrency, retry_window_s=settings.delivery_retry_window_s,
            public_url=settings.app_public_url, helpdesk_wait_s=settings.helpdesk_wait_for_end_s,
        )
        metrics = DeliveryMetrics(registry)
        worker = DeliveryWorker(
            sessions=sessions, directory=directory, http=delivery_http, clock=clock,
            metrics=metrics, options=options, environ=environ,
            resolver=resolver or resolve_addresses,
        )
        retention = DeliveryRetention(sessions=sessions, clock=clock, metrics=metrics,
                                      retention_days=settings.delivery_retention_days)
        return cls(directory, EventRecorder(directory, clock), worker, retention, delivery_http, config_http)

    def wake(self) -> None:
        self.worker.wake()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            async with asyncio.TaskGroup() as tasks:
                config_task = tasks.create_task(self.directory.run(), name="integrations-config")
                worker_task = tasks.create_task(self.worker.run(), name="integrations-delivery")
                retention_task = tasks.create_task(self.retention.run(), name="integrations-retention")
                try:
                    yield
                finally:
                    # Let both loops finish what they are doing (bounded) rather than cancel a database
                    # query or a request halfway; whatever is still running after that is cancelled.
                    self.directory.stop()
                    self.retention.stop()
                    await self.worker.stop(STOP_TIMEOUT_S)
                    _, still_running = await asyncio.wait({worker_task, config_task, retention_task},
                                                          timeout=STOP_TIMEOUT_S)
                    for task in still_running:
                        task.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.delivery_http.aclose()
            with contextlib.suppress(Exception):
                await self.config_http.aclose()

"""What the routes of one App server instance share, built once in create_app()."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.pricing import PriceTable
from switchboard.tickets.integrations.service import IntegrationsService
from switchboard.tickets.metrics import AppServerMetrics


@dataclass(frozen=True, slots=True)
class AppServerContext:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: AppServerMetrics
    clock: Clock
    service_token: bytes
    prices: PriceTable | None = None
    price_model: str = "gpt-realtime"
    integrations: IntegrationsService | None = None

    def wake_integrations(self) -> None:
        """An event was recorded: let this server's delivery worker look now rather than at its next poll."""
        if self.integrations is not None:
            self.integrations.wake()

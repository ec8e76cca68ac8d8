"""What the routes of one App server instance share, built once in create_app()."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.pricing import PriceTable
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

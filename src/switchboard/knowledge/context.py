"""What the routes of one app share (sessions, embedder, HTTP client, clock, metrics), and the auth check.

Built by `create_app`, opened and closed by its lifespan. Routes reach it through FastAPI dependencies.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.knowledge.embeddings import Embedder, load_embedder
from switchboard.knowledge.errors import Unauthorized
from switchboard.knowledge.metrics import AIMetrics


@dataclass
class AIContext:
    service_token: str
    clock: Clock
    metrics: AIMetrics
    environ: Mapping[str, str]  # where ${VAR} in tool headers comes from
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    http_client: httpx.AsyncClient | None = None
    embedder: Embedder | None = None
    _embedder_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def wait_for_embedder(self) -> Embedder:
        """The embedding model, loaded on first use in a thread (it takes a fraction of a second)."""
        async with self._embedder_lock:
            if self.embedder is None:
                self.embedder = await asyncio.to_thread(load_embedder)
        return self.embedder


def get_context(request: Request) -> AIContext:
    context = request.app.state.context
    assert isinstance(context, AIContext)
    return context


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; read-only routes never commit."""
    context = get_context(request)
    if context.sessions is None:
        raise RuntimeError("the app's lifespan has not started")
    async with context.sessions() as session:
        yield session


def require_service_token(request: Request) -> None:
    """Raises: Unauthorized unless `Authorization: Bearer <SWITCHBOARD_SERVICE_TOKEN>`."""
    expected = get_context(request).service_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise Unauthorized("missing or wrong bearer token")


ContextDep = Annotated[AIContext, Depends(get_context)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

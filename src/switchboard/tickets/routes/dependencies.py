"""FastAPI dependencies: the service-token check and a repository on a per-request session."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

from fastapi import Request

from switchboard.tickets.context import AppServerContext
from switchboard.tickets.errors import Unauthorized
from switchboard.tickets.integrations.events import EventRecorder
from switchboard.tickets.repository import ConversationRepository, TicketRepository


def app_context(request: Request) -> AppServerContext:
    context: AppServerContext = request.app.state.context
    return context


def require_service_token(request: Request) -> None:
    """Raises: Unauthorized unless the request carries `Authorization: Bearer <service token>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = app_context(request).service_token
    # compare_digest on bytes: the time taken must not depend on how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("a valid service token is required (Authorization: Bearer ...)")


def _recorder(request: Request) -> EventRecorder | None:
    integrations = app_context(request).integrations
    return integrations.recorder if integrations is not None else None


async def conversation_repository(request: Request) -> AsyncIterator[ConversationRepository]:
    context = app_context(request)
    async with context.sessions() as session:
        yield ConversationRepository(
            session, prices=context.prices, model=context.price_model, events=_recorder(request)
        )


async def ticket_repository(request: Request) -> AsyncIterator[TicketRepository]:
    async with app_context(request).sessions() as session:
        yield TicketRepository(session, _recorder(request))

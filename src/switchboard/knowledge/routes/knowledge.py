"""Knowledge base search for one tenant."""

from __future__ import annotations

import time

from fastapi import APIRouter

from switchboard.knowledge.context import ContextDep, SessionDep
from switchboard.knowledge.knowledge_search import search_knowledge
from switchboard.knowledge.schemas import SearchRequest, SearchResponse, SearchResult
from switchboard.logs import get_logger

router = APIRouter()
log = get_logger(__name__)


@router.post("/search_knowledge_base/")
async def search_knowledge_base(
    body: SearchRequest,
    session: SessionDep,
    context: ContextDep,
) -> SearchResponse:
    started = time.perf_counter()
    embedder = await context.wait_for_embedder()
    hits = await search_knowledge(session, embedder, body.bot_profile_key, body.query, body.top_k)
    duration_s = time.perf_counter() - started
    context.metrics.knowledge_searches.inc()
    context.metrics.knowledge_search_duration.observe(duration_s)
    log.info(
        "knowledge.searched", tenant=body.bot_profile_key, results=len(hits), duration_ms=round(duration_s * 1000, 1)
    )
    log.debug("knowledge.query", pii_query=body.query)
    return SearchResponse(
        results=[SearchResult(title=h.title, text=h.text, source=h.source, score=h.score) for h in hits]
    )

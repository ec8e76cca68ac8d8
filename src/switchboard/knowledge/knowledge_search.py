"""Search one tenant's knowledge: read its chunks, embed the query in a thread, rank with `retrieval.rank`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.knowledge import repository
from switchboard.knowledge.embeddings import Embedder, from_bytes
from switchboard.knowledge.retrieval import rank


@dataclass(frozen=True, slots=True)
class KnowledgeHit:
    title: str
    text: str
    source: str
    score: float


def _display_title(title: str, heading: str) -> str:
    # A markdown file's title is usually its first heading: "Returns > Refunds", not "Returns > Returns > Refunds".
    if not heading:
        return title
    return heading if heading.startswith(title) else f"{title} > {heading}"


async def search_knowledge(
    session: AsyncSession, embedder: Embedder, bot_profile_key: str, query: str, top_k: int
) -> list[KnowledgeHit]:
    """Best chunks of this tenant only, best first.

    Raises:
        TenantNotFound: no such tenant.
    """
    await repository.get_tenant(session, bot_profile_key)
    chunks = await repository.list_chunks(session, bot_profile_key)
    if not chunks:
        return []
    query_vector = (await asyncio.to_thread(embedder.embed, [query]))[0]
    vectors = np.stack([from_bytes(c.embedding) for c in chunks]).astype(np.float32)
    texts = [f"{c.title} {c.heading} {c.text}" for c in chunks]
    ranked = await asyncio.to_thread(rank, query, query_vector, texts, vectors, top_k)
    hits = []
    for item in ranked:
        chunk = chunks[item.index]
        title = _display_title(chunk.title, chunk.heading)
        hits.append(KnowledgeHit(title=title, text=chunk.text, source=chunk.source, score=round(item.score, 6)))
    return hits


def format_hits_for_model(hits: list[KnowledgeHit]) -> str:
    """The text a `get_knowledge` tool call returns to the model."""
    if not hits:
        return "The knowledge base has nothing on this."
    return "\n\n".join(f"[{hit.title}]\n{hit.text}" for hit in hits)

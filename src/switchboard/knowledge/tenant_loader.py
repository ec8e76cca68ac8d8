"""Load validated tenants into the database: all-or-nothing, idempotent, re-embedding only changed documents.

Order of work: read every knowledge file and compare content hashes with the database, embed what
changed (outside the transaction: it is slow), then write everything in one transaction. Any error
before the commit leaves the database as it was.

Credits: a tenant's `credits` in the file is its allowance of call minutes, and calls charged since
(`call_charges`, written by POST /voiceagent/charge_call/) are subtracted from it, so the balance is
always `max(0, allowance - minutes charged)`. Reloading the same file, or a file that changes only
other keys, leaves the balance alone; raising the allowance by N adds N minutes; lowering it below
what was used leaves 0. Minutes a call ran past a balance of 0 are still recorded, so they are taken
from the next raise of the allowance.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from switchboard.knowledge.chunking import CHUNKER_VERSION, Chunk, chunk_text
from switchboard.knowledge.database import sessionmaker
from switchboard.knowledge.documents import Document, DocumentError, read_document
from switchboard.knowledge.embeddings import Embedder, FloatArray, to_bytes
from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.models import (
    CallCharge,
    KnowledgeChunk,
    KnowledgeDocument,
    Tenant,
    TenantIntegrations,
    TenantRoute,
    TenantTool,
)
from switchboard.knowledge.tenant_file import TenantSpec

ROUTE_FIELDS = {"sip_domains": "sip_domain", "numbers": "number", "application_sids": "application_sid"}


@dataclass
class LoadSummary:
    tenants_created: list[str] = field(default_factory=list)
    tenants_updated: list[str] = field(default_factory=list)
    tenants_unchanged: list[str] = field(default_factory=list)
    documents_embedded: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    chunks_embedded: int = 0

    def describe(self) -> str:
        return (
            f"tenants: {len(self.tenants_created)} created, {len(self.tenants_updated)} updated, "
            f"{len(self.tenants_unchanged)} unchanged; knowledge documents: {self.documents_embedded} embedded "
            f"({self.chunks_embedded} chunks), {self.documents_unchanged} unchanged, {self.documents_removed} removed"
        )


@dataclass
class _PreparedDocument:
    index: int  # position in the tenant's knowledge list, for error messages
    document: Document
    content_sha256: str
    chunks: list[Chunk] = field(default_factory=list)
    embeddings: FloatArray | None = None


def profile_sha256(spec: TenantSpec) -> str:
    profile = spec.model_dump(mode="json", exclude={"knowledge"})
    return hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()


def document_sha256(document: Document, model_id: str) -> str:
    digest = hashlib.sha256()
    for part in (CHUNKER_VERSION, model_id, document.title, document.text):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _read_documents(spec: TenantSpec, folder: Path) -> list[Document]:
    documents = []
    for index, source in enumerate(spec.knowledge):
        if source.path is not None:
            try:
                documents.append(read_document(folder, source.path))
            except DocumentError as exc:
                raise TenantFileError(f"tenant '{spec.key}': knowledge.{index}.path: {exc}") from None
        else:
            assert source.text is not None and source.title is not None
            documents.append(Document(source=source.source, title=source.title, text=source.text.strip()))
    return documents


async def load_tenants(
    engine: AsyncEngine,
    specs: list[TenantSpec],
    folder: Path,
    embedder: Embedder,
    now: datetime,
    progress: Callable[[str], None] = lambda line: None,
) -> LoadSummary:
    """Write `specs` (from one tenant file in `folder`) to the database in one transaction.

    Tenants not in the file are left alone. For a tenant in the file, its routes, tools and knowledge
    become exactly what the file says; documents whose content hash is unchanged keep their chunks.
    `credits` is an allowance: the balance becomes `max(0, credits - minutes charged so far)` (see the
    module docstring), computed with the tenant's row locked so a call charged meanwhile is not lost.

    Raises:
        TenantFileError: a knowledge file cannot be read, or a route already belongs to another tenant.
    """
    summary = LoadSummary()
    prepared: dict[str, list[_PreparedDocument]] = {}
    for spec in specs:
        documents = await asyncio.to_thread(_read_documents, spec, folder)
        prepared[spec.key] = [
            _PreparedDocument(index, doc, document_sha256(doc, embedder.model_id)) for index, doc in enumerate(documents)
        ]

    make_session = sessionmaker(engine)
    async with make_session() as session:
        rows = await session.execute(
            select(KnowledgeDocument.tenant_key, KnowledgeDocument.source, KnowledgeDocument.content_sha256).where(
                KnowledgeDocument.tenant_key.in_([s.key for s in specs])
            )
        )
        stored_hashes = {(key, source): sha for key, source, sha in rows}

    for spec in specs:
        for item in prepared[spec.key]:
            if stored_hashes.get((spec.key, item.document.source)) == item.content_sha256:
                continue
            item.chunks = chunk_text(item.document.text)
            texts = [c.for_embedding(item.document.title) for c in item.chunks]
            progress(f"embedding {spec.key}: {item.document.source} ({len(texts)} chunks)")
            item.embeddings = await asyncio.to_thread(embedder.embed, texts)

    async with make_session() as session, session.begin():
        file_keys = [s.key for s in specs]
        wanted = [
            (kind, value, spec.key, f"{field_name}.{index}")
            for spec in specs
            for field_name, kind in ROUTE_FIELDS.items()
            for index, value in enumerate(getattr(spec, field_name))
        ]
        if wanted:
            taken = await session.execute(
                select(TenantRoute.kind, TenantRoute.value, TenantRoute.tenant_key).where(
                    tuple_(TenantRoute.kind, TenantRoute.value).in_([(k, v) for k, v, _, _ in wanted]),
                    TenantRoute.tenant_key.not_in(file_keys),
                )
            )
            owners = {(kind, value): owner for kind, value, owner in taken}
            for kind, value, key, where in wanted:
                if (kind, value) in owners:
                    raise TenantFileError(
                        f"tenant '{key}': {where}: '{value}' is already routed to tenant '{owners[kind, value]}'"
                    )

        for spec in specs:
            sha = profile_sha256(spec)
            # Locked (PostgreSQL) so a charge_call waits for this load or commits before the sum of
            # charges is read; SQLite serialises writers on its own.
            tenant = await session.get(Tenant, spec.key, with_for_update=True)
            if tenant is None:
                summary.tenants_created.append(spec.key)
                tenant = Tenant(key=spec.key, created_at=now)
                session.add(tenant)
            elif tenant.profile_sha256 == sha:
                summary.tenants_unchanged.append(spec.key)
            else:
                summary.tenants_updated.append(spec.key)
            if tenant.profile_sha256 != sha:
                await _write_profile(session, tenant, spec, sha, now)
            knowledge_changed = await _write_knowledge(
                session, spec.key, prepared[spec.key], embedder.model_id, now, summary
            )
            if knowledge_changed and spec.key in summary.tenants_unchanged:
                summary.tenants_unchanged.remove(spec.key)
                summary.tenants_updated.append(spec.key)
                tenant.updated_at = now
    return summary


async def _write_profile(session: AsyncSession, tenant: Tenant, spec: TenantSpec, sha: str, now: datetime) -> None:
    tenant.company = spec.company
    tenant.greeting = spec.greeting
    tenant.instructions = spec.instructions
    tenant.voice = spec.voice.model_dump(mode="json")
    tenant.transcriber = spec.transcriber
    tenant.business_hours = spec.business_hours
    tenant.transfer = spec.transfer.model_dump(mode="json", exclude_none=True) if spec.transfer else None
    tenant.turn_detection = spec.turn_detection_as_given()
    tenant.keypad = dict(spec.keypad) or None
    tenant.credits = max(0, spec.credits - await _charged_minutes(session, spec.key))
    tenant.max_concurrent_calls = spec.max_concurrent_calls
    tenant.profile_sha256 = sha
    tenant.updated_at = now
    await session.flush()
    # Core deletes run now, before the inserts below, so a route can move between tenants of one file.
    await session.execute(delete(TenantRoute).where(TenantRoute.tenant_key == spec.key))
    await session.execute(delete(TenantTool).where(TenantTool.tenant_key == spec.key))
    await session.execute(delete(TenantIntegrations).where(TenantIntegrations.tenant_key == spec.key))
    await session.flush()
    if spec.integrations is not None:
        session.add(TenantIntegrations(
            tenant_key=spec.key, config=spec.integrations.model_dump(mode="json"), updated_at=now
        ))
    for field_name, kind in ROUTE_FIELDS.items():
        for value in getattr(spec, field_name):
            session.add(TenantRoute(tenant_key=spec.key, kind=kind, value=value))
    for position, tool in enumerate(spec.tools):
        session.add(
            TenantTool(
                tenant_key=spec.key,
                position=position,
                name=tool.name,
                description=tool.description,
                parameters=tool.parameters,
                http=tool.http.model_dump(mode="json"),
            )
        )
    await session.flush()


async def _charged_minutes(session: AsyncSession, key: str) -> int:
    # No autoflush: a tenant being created is not complete yet.
    with session.no_autoflush:
        total = await session.scalar(
            select(func.coalesce(func.sum(CallCharge.minutes), 0)).where(CallCharge.tenant_key == key)
        )
    return int(total or 0)


async def _write_knowledge(
    session: AsyncSession, key: str, documents: list[_PreparedDocument], model_id: str, now: datetime,
    summary: LoadSummary,
) -> bool:
    """Make the tenant's stored documents match `documents`; return whether anything changed."""
    changed = False
    rows = await session.execute(
        select(KnowledgeDocument.document_id, KnowledgeDocument.source, KnowledgeDocument.content_sha256).where(
            KnowledgeDocument.tenant_key == key
        )
    )
    stored = {source: (document_id, sha) for document_id, source, sha in rows}
    wanted_sources = {item.document.source for item in documents}
    stale = [document_id for source, (document_id, _) in stored.items() if source not in wanted_sources]
    summary.documents_removed += len(stale)
    for item in documents:
        existing = stored.get(item.document.source)
        if existing is not None and existing[1] == item.content_sha256:
            summary.documents_unchanged += 1
            continue
        if existing is not None:
            stale.append(existing[0])
    if stale:
        changed = True
        await session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.document_id.in_(stale)))
        await session.execute(delete(KnowledgeDocument).where(KnowledgeDocument.document_id.in_(stale)))
    for item in documents:
        existing = stored.get(item.document.source)
        if existing is not None and existing[1] == item.content_sha256:
            continue
        if item.embeddings is None:
            # The database changed between the hash read and this transaction; embed on the next load.
            raise TenantFileError(
                f"tenant '{key}': knowledge.{item.index}: changed by another load meanwhile; run the load again"
            )
        document = KnowledgeDocument(
            tenant_key=key,
            source=item.document.source,
            title=item.document.title,
            content_sha256=item.content_sha256,
            embedding_model=model_id,
            updated_at=now,
        )
        document.chunks = [
            KnowledgeChunk(tenant_key=key, ordinal=i, heading=c.heading, text=c.text, embedding=to_bytes(vector))
            for i, (c, vector) in enumerate(zip(item.chunks, item.embeddings, strict=True))
        ]
        session.add(document)
        summary.documents_embedded += 1
        summary.chunks_embedded += len(item.chunks)
        changed = True
    await session.flush()
    return changed

"""Knowledge retrieval quality and latency on the labelled set of tests/knowledge/data.

Loads the labelled tenant file into a throwaway SQLite database (or AI_DATABASE_URL if set), then for
every labelled query reports hit@1, hit@3 and MRR for lexical-only, embedding-only and the hybrid
ranking the server uses, and the latency of POST /voiceagent/search_knowledge_base/ through the real
app (in-process, ASGI). Run: .venv/bin/python bench/knowledge_retrieval.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import yaml

from switchboard.config import AISettings, load_settings
from switchboard.knowledge.app import create_app
from switchboard.knowledge.database import create_engine, migrate, sessionmaker
from switchboard.knowledge.embeddings import from_bytes, load_embedder
from switchboard.knowledge.repository import list_chunks
from switchboard.knowledge.retrieval import bm25_scores, rank, terms
from switchboard.knowledge.tenant_file import parse_tenant_file
from switchboard.knowledge.tenant_loader import load_tenants
from switchboard.logs import configure_logging

DATA = Path(__file__).resolve().parent.parent / "tests" / "knowledge" / "data"
TENANT = "acme-support"
TOKEN = "bench-token-0123456789"


def _hit_rank(ordered: list[int], sources: list[str], texts: list[str], case: dict[str, str]) -> int | None:
    for position, index in enumerate(ordered):
        if sources[index] == case["source"] and case["expect"] in texts[index]:
            return position + 1
    return None


def _report(name: str, ranks: list[int | None]) -> None:
    n = len(ranks)
    hit1 = sum(1 for r in ranks if r == 1)
    hit3 = sum(1 for r in ranks if r is not None and r <= 3)
    mrr = sum(1.0 / r for r in ranks if r is not None) / n
    print(f"  {name:<10} hit@1 {hit1}/{n} ({hit1 / n:.2f})  hit@3 {hit3}/{n} ({hit3 / n:.2f})  MRR {mrr:.3f}")


async def main(repeat: int) -> None:
    cases = yaml.safe_load((DATA / "retrieval_cases.yaml").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        database_url = os.environ.get("AI_DATABASE_URL") or f"sqlite+aiosqlite:///{scratch}/bench.db"
        engine = create_engine(database_url)
        await migrate(engine)
        started = time.perf_counter()
        embedder = load_embedder()
        load_s = time.perf_counter() - started
        specs = parse_tenant_file((DATA / "tenants.yaml").read_text())
        started = time.perf_counter()
        summary = await load_tenants(engine, specs, DATA, embedder, now=datetime.now(UTC))
        ingest_s = time.perf_counter() - started
        async with sessionmaker(engine)() as session:
            chunks = await list_chunks(session, TENANT)
        await engine.dispose()

        print(f"model load {load_s * 1000:.0f} ms; ingest {summary.chunks_embedded} chunks in {ingest_s * 1000:.0f} ms")
        print(f"{len(cases)} labelled queries over {len(chunks)} chunks of tenant {TENANT}")
        texts = [f"{c.title} {c.heading} {c.text}" for c in chunks]
        sources = [c.source for c in chunks]
        vectors = np.stack([from_bytes(c.embedding) for c in chunks])
        lexical_ranks, dense_ranks, hybrid_ranks = [], [], []
        for case in cases:
            query_vector = embedder.embed([case["query"]])[0]
            lexical = bm25_scores(terms(case["query"]), [terms(t) for t in texts])
            lexical_order = [i for i in np.argsort(-np.array(lexical), kind="stable") if lexical[i] > 0]
            dense_order = list(np.argsort(-(vectors @ query_vector), kind="stable"))
            hybrid_order = [r.index for r in rank(case["query"], query_vector, texts, vectors, len(texts))]
            lexical_ranks.append(_hit_rank(lexical_order, sources, texts, case))
            dense_ranks.append(_hit_rank(dense_order, sources, texts, case))
            hybrid_ranks.append(_hit_rank(hybrid_order, sources, texts, case))
        _report("lexical", lexical_ranks)
        _report("embedding", dense_ranks)
        _report("hybrid", hybrid_ranks)

        settings = load_settings(AISettings, AI_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=TOKEN)
        app = create_app(settings)
        latencies_ms = []
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ai", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            await client.post("/voiceagent/search_knowledge_base/", json={"bot_profile_key": TENANT, "query": "warm up"})
            for _ in range(repeat):
                for case in cases:
                    started = time.perf_counter()
                    response = await client.post(
                        "/voiceagent/search_knowledge_base/",
                        json={"bot_profile_key": TENANT, "query": case["query"], "top_k": 3},
                    )
                    latencies_ms.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
        latencies_ms.sort()
        p90 = latencies_ms[int(0.9 * (len(latencies_ms) - 1))]
        print(
            f"search_knowledge_base latency over {len(latencies_ms)} requests: "
            f"p50 {statistics.median(latencies_ms):.1f} ms, p90 {p90:.1f} ms, max {latencies_ms[-1]:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes over the labelled queries for latency")
    configure_logging(level="WARNING")
    asyncio.run(main(parser.parse_args().repeat))

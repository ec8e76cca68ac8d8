"""Fixtures for the AI server: tenant files on disk, loading them, and the real app behind ASGITransport."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from switchboard.clock import ManualClock
from switchboard.config import AISettings, load_settings
from switchboard.knowledge.app import create_app
from switchboard.knowledge.database import create_engine, migrate
from switchboard.knowledge.embeddings import EMBEDDING_MODEL, FloatArray, load_embedder
from switchboard.knowledge.tenant_file import parse_tenant_file
from switchboard.knowledge.tenant_loader import LoadSummary, load_tenants

SERVICE_TOKEN = "test-service-token-0123456789"
LOADED_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

ACME = """\
  - key: acme-support
    company: Acme Outdoor
    numbers: ["+15551230001"]
    sip_domains: ["acme.sip.twilio.com"]
    application_sids: ["AP00000000000000000000000000000001"]
    greeting: "Thanks for calling Acme Outdoor, how can I help?"
    instructions: "You help callers with orders, returns and store hours."
    voice: {provider: openai, name: marin, speed: 1.0}
    transcriber: none
    business_hours: {timezone: America/New_York, mon-fri: "09:00-18:00", sat: "10:00-14:00"}
    transfer: {number: "+15559990000", caller_id: "+15551230001"}
    credits: 500
    knowledge:
      - path: kb/returns.md
      - text: "Stores are closed on public holidays such as Thanksgiving and Christmas Day."
        title: Holidays
    tools:
      - name: lookup_order
        description: "Look up an order by its number."
        parameters: {type: object, properties: {order_number: {type: string}}, required: [order_number]}
        http: {method: POST, url: "https://orders.example.com/lookup", headers: {Authorization: "Bearer ${ACME_ORDERS_TOKEN}"}}
"""

GLOBEX = """\
  - key: globex
    company: Globex Energy
    numbers: ["+15551230002"]
    sip_domains: ["globex.sip.twilio.com"]
    greeting: "Globex Energy, good day."
    voice: {provider: elevenlabs, voice_id: "21m00Tcm4TlvDq8ikWAM", model: eleven_flash_v2_5}
    transcriber: cartesia
    credits: 0
    knowledge:
      - text: "Your meter is read every month by a technician. Meter readings can also be submitted online."
        title: Meter readings
"""

RETURNS_MD = """\
# Returns

You can return any item within 30 days of delivery for a full refund. Items must be unused and in the
original packaging.

## Refunds

Refunds go back to the original payment method within 5 business days after we receive the item.

## Exchanges

To exchange a jacket for a different size, start a return and place a new order.
"""


def write_tenant_file(folder: Path, *entries: str, name: str = "tenants.yaml") -> Path:
    """A tenant file with the given `- key: ...` entries, plus kb/returns.md beside it."""
    (folder / "kb").mkdir(exist_ok=True)
    if not (folder / "kb" / "returns.md").exists():
        (folder / "kb" / "returns.md").write_text(RETURNS_MD)
    path = folder / name
    path.write_text("tenants:\n" + "".join(textwrap.dedent(e) if not e.startswith("  ") else e for e in entries))
    return path


@pytest.fixture
def tenant_file(tmp_path: Path) -> Path:
    return write_tenant_file(tmp_path, ACME, GLOBEX)


class MemoizedEmbedder:
    """The real MiniLM embedder, remembering vectors by text: the same documents are loaded by many tests."""

    model_id = EMBEDDING_MODEL

    def __init__(self) -> None:
        self._vectors: dict[str, FloatArray] = {}
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> FloatArray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
            if missing:
                self._vectors.update(zip(missing, load_embedder().embed(missing), strict=True))
            return np.stack([self._vectors[t] for t in texts]) if texts else load_embedder().embed([])


EMBEDDER = MemoizedEmbedder()


async def load_file(database_url: str, path: Path) -> LoadSummary:
    """What `tenants load` does, in-process: migrate, parse, load."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        specs = parse_tenant_file(await asyncio.to_thread(path.read_text))
        return await load_tenants(engine, specs, path.parent, EMBEDDER, now=LOADED_AT)
    finally:
        await engine.dispose()


def ai_settings(database_url: str) -> AISettings:
    return load_settings(AISettings, AI_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN)


@asynccontextmanager
async def running_app(
    database_url: str, *, wall: datetime | None = None, environ: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan running, and a client that sends the service token."""
    clock = ManualClock(wall_start=wall or datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    app = create_app(ai_settings(database_url), clock=clock, environ=environ)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://ai.test",
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
    ) as client:
        yield client


@pytest.fixture
async def loaded_client(database_url: str, tenant_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    await load_file(database_url, tenant_file)
    async with running_app(database_url) as client:
        yield client

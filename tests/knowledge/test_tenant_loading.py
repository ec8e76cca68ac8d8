"""Loading tenant files into the database: idempotent, all-or-nothing, re-embedding only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from switchboard.knowledge.database import create_engine
from switchboard.knowledge.errors import TenantFileError
from switchboard.knowledge.models import KnowledgeChunk, KnowledgeDocument, Tenant, TenantRoute, TenantTool

from .conftest import ACME, GLOBEX, load_file, write_tenant_file


async def snapshot(database_url: str) -> dict[str, Any]:
    """Every row we write, as plain data, to compare databases before and after a load."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = {}
            for model in (Tenant, TenantRoute, TenantTool, KnowledgeDocument, KnowledgeChunk):
                rows = (await connection.execute(select(model.__table__))).all()
                tables[model.__tablename__] = sorted(tuple(str(v) for v in row) for row in rows)
            return tables
    finally:
        await engine.dispose()


async def test_loading_twice_changes_nothing(database_url: str, tenant_file: Path) -> None:
    first = await load_file(database_url, tenant_file)
    assert first.tenants_created == ["acme-support", "globex"]
    assert first.documents_embedded == 3
    before = await snapshot(database_url)

    second = await load_file(database_url, tenant_file)

    assert second.tenants_unchanged == ["acme-support", "globex"]
    assert (second.documents_embedded, second.documents_unchanged, second.documents_removed) == (0, 3, 0)
    assert await snapshot(database_url) == before
    assert len(before["tenant_routes"]) == 5
    assert len(before["knowledge_chunks"]) == 5


async def test_tool_headers_are_stored_unexpanded(database_url: str, tenant_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_ORDERS_TOKEN", "s3cret-value")
    await load_file(database_url, tenant_file)
    tools = (await snapshot(database_url))["tenant_tools"]
    assert len(tools) == 1
    assert "Bearer ${ACME_ORDERS_TOKEN}" in str(tools[0])
    assert "s3cret-value" not in str(tools)


async def test_reload_re_embeds_only_the_changed_document(database_url: str, tenant_file: Path) -> None:
    await load_file(database_url, tenant_file)
    before = await snapshot(database_url)
    (tenant_file.parent / "kb" / "returns.md").write_text("# Returns\n\nReturns are accepted within 60 days.\n")

    summary = await load_file(database_url, tenant_file)

    assert summary.tenants_updated == ["acme-support"]
    assert summary.tenants_unchanged == ["globex"]
    assert (summary.documents_embedded, summary.documents_unchanged) == (1, 2)
    after = await snapshot(database_url)
    unchanged = [row for row in before["knowledge_chunks"] if "returns.md" not in row and "Returns" not in row[4]]
    assert all(row in after["knowledge_chunks"] for row in unchanged)
    assert any("60 days" in row[5] for row in after["knowledge_chunks"])
    assert not any("30 days" in row[5] for row in after["knowledge_chunks"])


async def test_documents_routes_and_tools_follow_the_file(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    slimmer = ACME.replace('    numbers: ["+15551230001"]\n', '    numbers: ["+15551230009"]\n')
    slimmer = slimmer.split("    knowledge:\n")[0]  # drop knowledge and tools

    summary = await load_file(database_url, write_tenant_file(tmp_path, slimmer, GLOBEX))

    assert summary.documents_removed == 2
    rows = await snapshot(database_url)
    assert {r[1:] for r in rows["tenant_routes"] if r[2] == "number"} == {
        ("acme-support", "number", "+15551230009"),
        ("globex", "number", "+15551230002"),
    }
    assert rows["tenant_tools"] == []
    assert {r[1] for r in rows["knowledge_documents"]} == {"globex"}


async def test_an_error_in_any_tenant_changes_nothing(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    before = await snapshot(database_url)
    # The first tenant is valid and changed; the second refers to a knowledge file that is missing.
    changed_acme = ACME.replace("credits: 500", "credits: 10")
    broken_globex = GLOBEX + "      - path: kb/missing.md\n"
    path = write_tenant_file(tmp_path, changed_acme, broken_globex, name="broken.yaml")

    with pytest.raises(TenantFileError, match=r"^tenant 'globex': knowledge\.1\.path: file 'kb/missing\.md' not found"):
        await load_file(database_url, path)

    assert await snapshot(database_url) == before


async def test_a_route_owned_by_a_tenant_outside_the_file_is_refused(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    before = await snapshot(database_url)
    intruder = (
        "  - key: initech\n    company: Initech\n    greeting: Hello\n    credits: 3\n"
        '    numbers: ["+15551230002"]\n'
    )
    path = write_tenant_file(tmp_path, intruder, name="intruder.yaml")

    with pytest.raises(TenantFileError) as info:
        await load_file(database_url, path)

    assert str(info.value) == "tenant 'initech': numbers.0: '+15551230002' is already routed to tenant 'globex'"
    assert await snapshot(database_url) == before


async def test_a_route_may_move_between_tenants_of_one_file(database_url: str, tmp_path: Path) -> None:
    await load_file(database_url, write_tenant_file(tmp_path, ACME, GLOBEX))
    moved_acme = ACME.replace('["acme.sip.twilio.com"]', "[]")
    moved_globex = GLOBEX.replace('["globex.sip.twilio.com"]', '["globex.sip.twilio.com", "acme.sip.twilio.com"]')

    await load_file(database_url, write_tenant_file(tmp_path, moved_acme, moved_globex))

    routes = (await snapshot(database_url))["tenant_routes"]
    assert [r[1] for r in routes if r[3] == "acme.sip.twilio.com"] == ["globex"]

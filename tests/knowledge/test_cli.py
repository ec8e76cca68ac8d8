"""`switchboard tenants load FILE` as an operator runs it: a subprocess with AI_DATABASE_URL set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ACME, GLOBEX, running_app, write_tenant_file

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def run_load(database_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AI_DATABASE_URL": database_url}
    return subprocess.run(
        [SWITCHBOARD, "tenants", "load", str(path)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_tenants_load_succeeds_then_refuses_a_bad_file_changing_nothing(database_url: str, tmp_path: Path) -> None:
    good = write_tenant_file(tmp_path, ACME, GLOBEX)
    loaded = run_load(database_url, good)
    assert loaded.returncode == 0, loaded.stderr
    assert "tenants: 2 created, 0 updated, 0 unchanged" in loaded.stdout
    assert "embedding acme-support: kb/returns.md" in loaded.stdout

    bad = write_tenant_file(tmp_path, ACME.replace("credits: 500", "credits: 1\n    colour: red"), GLOBEX, name="bad.yaml")
    refused = run_load(database_url, bad)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "switchboard: tenant 'acme-support': unknown key 'colour'; nothing was changed"

    async with running_app(database_url) as client:
        acme = await client.post("/voiceagent/resolve_tenant/", json={"to": "+15551230001"})
    assert acme.json()["credits"] == 500


def test_tenants_load_names_a_missing_file(tmp_path: Path) -> None:
    result = run_load(f"sqlite+aiosqlite:///{tmp_path}/ai.db", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "tenant file" in result.stderr and "nope.yaml' not found" in result.stderr

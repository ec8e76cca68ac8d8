"""`switchboard users …` and `switchboard keys …` as an operator runs them, against the database of a
running App server: each change is in effect on the server's next request."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from tests.tickets.dashboard_data import sign_in
from tests.tickets.harness import SERVICE_TOKEN, build_app


@dataclass
class Cli:
    database_url: str

    async def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        env = {**os.environ, "APP_DATABASE_URL": self.database_url, "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN}
        # asyncio's debug mode (set for the suite) would add its slow-callback notes about the schema
        # migration to stderr: the one-line error promise is about what an operator's shell shows.
        env.pop("PYTHONASYNCIODEBUG", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.cli", *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate(stdin.encode())
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def running(tmp_path: object) -> AsyncIterator[tuple[Cli, httpx.AsyncClient]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/app.db"
    app = build_app(database_url)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as client:
        yield Cli(database_url), client


async def test_users_add_list_remove_take_effect_at_once(running: tuple[Cli, httpx.AsyncClient]) -> None:
    cli, browser = running
    code, out, err = await cli.run("users", "add", "--tenant", "acme-support", "--email", "Ann@Acme.test",
                                   "--role", "developer", stdin="a long enough password\n")
    assert (code, err) == (0, "") and out.strip() == "added user ann@acme.test (tenant acme-support, role developer)"
    code, out, _ = await cli.run("users", "add", "--operator", "--email", "ops@switchboard.test",
                                 stdin="another long password\n")
    assert code == 0 and "every tenant, role operator" in out
    assert (await sign_in(browser, "ann@acme.test", "a long enough password")).status_code == 303
    assert (await browser.get("/ui/calls")).status_code == 200

    code, out, _ = await cli.run("users", "list")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["EMAIL", "TENANT", "ROLE", "CREATED"]
    assert any(line.split()[:3] == ["ann@acme.test", "acme-support", "developer"] for line in lines)

    code, out, _ = await cli.run("users", "remove", "ann@acme.test")
    assert code == 0 and out.strip() == "removed user ann@acme.test"
    assert (await browser.get("/ui/calls")).status_code == 303, "the removed user's session ends at once"


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["users", "add", "--tenant", "acme", "--email", "x@acme.test", "--role", "viewer"], "short\n",
     "the password must have at least 10 characters"),
    (["users", "add", "--tenant", "acme", "--email", "not-an-email", "--role", "viewer"], "long enough pw\n",
     "the email address is not valid"),
    (["users", "add", "--tenant", "acme", "--email", "x@acme.test"], "long enough pw\n", "--role viewer|developer|admin"),
    (["users", "remove", "nobody@acme.test"], "", "no user with email nobody@acme.test"),
    (["keys", "revoke", "99"], "", "no API key with id 99"),
    (["keys", "revoke", "abc"], "", "is not a number"),
    (["keys", "create", "--tenant", "bad tenant!", "--role", "viewer"], "", "is not a valid tenant key"),
    (["keys", "create", "--tenant", "acme", "--role", "superuser"], "", "invalid choice: 'superuser'"),
    (["users", "add", "--email", "x@acme.test", "--role", "viewer"], "", "one of the arguments --tenant --operator"),
    (["users"], "", "the following arguments are required"),
])
async def test_errors_are_one_clear_line_and_change_nothing(
    running: tuple[Cli, httpx.AsyncClient], args: list[str], stdin: str, message: str
) -> None:
    cli, _ = running
    code, out, err = await cli.run(*args, stdin=stdin)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("switchboard")
    _, listed, _ = await cli.run("users", "list")
    assert listed.strip().splitlines()[1:] == []


async def test_a_duplicate_email_is_refused(running: tuple[Cli, httpx.AsyncClient]) -> None:
    cli, _ = running
    args = ("users", "add", "--tenant", "acme", "--email", "x@acme.test", "--role", "viewer")
    assert (await cli.run(*args, stdin="long enough pw\n"))[0] == 0
    code, _, err = await cli.run(*args, stdin="long enough pw\n")
    assert code == 2 and "a user with email x@acme.test already exists" in err


async def test_keys_create_list_revoke_take_effect_at_once(running: tuple[Cli, httpx.AsyncClient]) -> None:
    cli, client = running
    code, out, err = await cli.run("keys", "create", "--tenant", "acme-support", "--role", "viewer", "--name", "crm")
    assert code == 0
    key = out.strip()
    assert key.startswith("sbk_") and len(key) > 40 and "shown this once" in err
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/tickets", headers=headers)).status_code == 200

    code, out, _ = await cli.run("keys", "list")
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["ID", "TENANT", "ROLE", "NAME", "PREFIX"]
    assert row.split()[:4] == ["1", "acme-support", "viewer", "crm"] and key not in out and key[:10] in out

    code, out, _ = await cli.run("keys", "revoke", "1")
    assert code == 0 and out.strip() == "revoked API key 1 (tenant acme-support)"
    assert (await client.get("/api/tickets", headers=headers)).status_code == 401

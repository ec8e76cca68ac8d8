"""The real App server (`switchboard serve app`) on a free port with a seeded database, and Debian's
Chromium driven by Playwright (never a downloaded browser). Marked `browser`: they need /usr/bin/chromium
(requirements/debian/browser.txt, installed by `make test`). Screenshots go to SCREENSHOT_DIR."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.tickets.dashboard_data import GLOBEX, USERS, Seeded, add_user, create_key, seed_calls
from tests.tickets.harness import SERVICE_TOKEN

from switchboard.tickets.database import create_engine

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_DIR = Path(os.environ.get("SWITCHBOARD_SCREENSHOT_DIR", "var/screenshots")).resolve()
VENDOR = Path(__file__).parent / "vendor"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    seeded: Seeded
    globex_key: str
    log_path: Path

    def service(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _seed(base_url: str, database_url: str) -> tuple[Seeded, str]:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                                 timeout=10) as service:
        seeded = await seed_calls(service)
        for n in range(52):  # enough for a second page
            await service.put(f"/api/conversations/CApage{n:03d}", json={
                "tenant": "acme-support", "caller": "+15550001111", "started_at": f"2026-11-20T10:{n:02d}:00+00:00"})
    engine = create_engine(database_url)
    try:
        for email, tenant, role in USERS:
            await add_user(engine, email, tenant, role)
        globex_key = await create_key(engine, GLOBEX, "admin")
    finally:
        await engine.dispose()
    return seeded, globex_key


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/debian-packages.sh` (make test does)")
    folder = tmp_path_factory.mktemp("app-server")
    database_url = f"sqlite+aiosqlite:///{folder}/app.db"
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = folder / "server.log"
    env = {**os.environ, "APP_DATABASE_URL": database_url, "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN,
           "SWITCHBOARD_SESSION_SECRET": "browser-test-session-secret", "OPIK_URL_OVERRIDE": "http://opik.test/api",
           "SWITCHBOARD_LOG_FORMAT": "json"}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "switchboard.cli", "serve", "app", "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/health-check/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the App server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        # A thread of its own: pytest-asyncio's loop may be running around fixture set-up.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            seeded, globex_key = pool.submit(asyncio.run, _seed(base_url, database_url)).result(timeout=60)
        yield LiveServer(base_url=base_url, seeded=seeded, globex_key=globex_key, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def screenshot_dir() -> Iterator[Path]:
    shutil.rmtree(SCREENSHOT_DIR, ignore_errors=True)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    yield SCREENSHOT_DIR
    print(f"\ndashboard screenshots: {SCREENSHOT_DIR}")


@pytest.fixture
async def page(screenshot_dir: Path) -> AsyncIterator[Any]:
    """A fresh Chromium page (its own cookies). Playwright's async API: the tests run on pytest-asyncio's loop."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(5_000)
            yield await context.new_page()
        finally:
            await browser.close()

"""An unusable SWITCHBOARD_OUTBOX_DIR stops the voice server at start-up, with one line naming it (contract §2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import httpx

from switchboard.bridge.app import create_app
from switchboard.config import VoiceSettings
from tests.bridge.harness import AUTH_TOKEN, SERVICE_TOKEN


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_voice_server_with_an_unwritable_outbox_dir_exits_with_one_line_and_is_never_ready(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file\n")
    outbox_dir = blocker / "outbox"  # mkdir fails: its parent is a file
    port = _free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN,
        "SWITCHBOARD_OUTBOX_DIR": str(outbox_dir), "SWITCHBOARD_STATE_URL": "",  # the local spool is in use
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "serve", "voice", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    ready_answers: list[int] = []
    try:
        async with httpx.AsyncClient(timeout=1.0) as http, asyncio.timeout(60):
            # Asked until the process is gone or answers (the one stderr line fits the pipe: it can't block).
            while process.returncode is None and not ready_answers:
                with contextlib.suppress(httpx.TransportError):
                    ready_answers.append((await http.get(f"http://127.0.0.1:{port}/health-check/ready")).status_code)
                await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert ready_answers == []  # it never listened, so it never said ready
    stderr = await process.stderr.read()
    assert await process.wait() != 0
    lines = stderr.decode().splitlines()
    assert lines == [
        f"switchboard: setting SWITCHBOARD_OUTBOX_DIR is unusable: cannot create or write the outbox spool in "
        f"{outbox_dir} (Not a directory)"
    ]


def test_the_outbox_dir_is_not_checked_when_the_outbox_spools_to_shared_state(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file\n")
    settings = VoiceSettings(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN,
        SWITCHBOARD_OUTBOX_DIR=str(blocker / "outbox"),
        # PostgreSQL shared state holds undelivered records; nothing connects before start-up.
        SWITCHBOARD_STATE_URL="postgresql+asyncpg://voice@127.0.0.1:1/state",
    )
    app = create_app(settings)
    assert app.state.settings is settings
    assert not (blocker / "outbox").exists() and blocker.is_file()

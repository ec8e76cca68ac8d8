"""Processes for the voice-server benches (soak, drain): the AI and App servers, and one voice server.

Builds on bridge_latency.py's `Stack` (AI server with the bench tenant, pinned to the load core) and adds
the App server (so the voice server's outbox delivers instead of retrying against nothing) and a voice
server started with extra settings, pinned with `nice -n -20 taskset -c 1`. Bench code only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import bridge_latency
from bridge_latency import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LOAD_CORE,
    NICE,
    REPO,
    SERVER_CORE,
    Stack,
    base_env,
    free_port,
    stop_process,
    wait_for_http,
)

SWITCHBOARD = str(REPO / ".venv/bin/switchboard")


class VoiceBenchStack(Stack):
    """AI + App servers on the load core; voice servers on the server core."""

    def __init__(self, workdir: Path, model_port: int) -> None:
        super().__init__(workdir, model_port)
        self.app_port = free_port()
        self.app_process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        # Credits are minutes: a soak of 100 x 5-minute calls needs more than the bench tenant's 500.
        bridge_latency.TENANT_YAML = bridge_latency.TENANT_YAML.replace("credits: 500", "credits: 1000000")
        await self.start_ai()
        env = base_env(APP_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir}/app.db")
        self.app_process = subprocess.Popen(  # noqa: ASYNC220 - start-up only
            ["nice", "-n", str(NICE), "taskset", "-c", str(LOAD_CORE), SWITCHBOARD, "serve", "app",
             "--host", "127.0.0.1", "--port", str(self.app_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "app.log", "wb"),  # noqa: SIM115, ASYNC230
        )
        await wait_for_http(f"http://127.0.0.1:{self.app_port}/health-check/ready")

    def voice_env(self, port: int, **extra: str) -> dict[str, str]:
        env = base_env(
            OPENAI_API_KEY="sk-bench", OPENAI_REALTIME_URL=self.model_url, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            AI_SERVER_URL=f"http://127.0.0.1:{self.ai_port}", APP_SERVER_URL=f"http://127.0.0.1:{self.app_port}",
            SWITCHBOARD_OUTBOX_DIR=str(self.workdir / f"outbox-{port}"),
            # The REST API (call completion) is not part of these benches: point it at a closed port.
            TWILIO_API_BASE_URL="http://127.0.0.1:9",
        )
        env.update(extra)
        return env

    def start_voice(self, port: int, **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"voice-{port}.log", "wb")  # noqa: SIM115
        command = [SWITCHBOARD, "serve", "voice", "--host", "127.0.0.1", "--port", str(port)]
        return subprocess.Popen(["nice", "-n", str(NICE), "taskset", "-c", str(SERVER_CORE), *command],
                                env=self.voice_env(port, **extra), stdout=subprocess.DEVNULL, stderr=log)

    def voice_log(self, port: int) -> str:
        path = self.workdir / f"voice-{port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.app_process is not None:
            stop_process(self.app_process)
        super().stop()

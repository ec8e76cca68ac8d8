"""Local use: the three services (plus the local speech engine when OPENAI_API_KEY is unset) as one
process tree. `switchboard serve all` and `switchboard demo` use it.

Each service is a child process running `switchboard serve <name>`; SIGINT/SIGTERM are forwarded
(the voice server then drains), and the tree exits when its children have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from switchboard.logs import get_logger

log = get_logger("switchboard.local_stack")

DEFAULT_PORTS = {"voice": 8080, "ai": 8081, "app": 8082, "engine": 8083}


@dataclass
class LocalStack:
    """Child processes for the named services; `start()` waits until each answers its health check."""

    ports: Mapping[str, int]
    env: Mapping[str, str]
    host: str = "127.0.0.1"
    services: tuple[str, ...] = ("ai", "app", "engine", "voice")
    start_timeout_s: float = 120.0
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def start(self) -> None:
        for service in self.services:
            if service not in self.ports:
                continue
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard.cli", "serve", service, "--host", self.host,
                "--port", str(self.ports[service]), env=dict(self.env),
            )
            self.processes[service] = process
        for service in self.processes:
            await self._wait_healthy(service)

    async def _wait_healthy(self, service: str) -> None:
        url = f"http://{self.host}:{self.ports[service]}/health-check/live"
        process = self.processes[service]
        async with httpx.AsyncClient(timeout=httpx.Timeout(1.0)) as http, asyncio.timeout(self.start_timeout_s):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"service {service} exited with code {process.returncode} during start-up")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)

    async def stop(self, timeout_s: float = 15.0) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for service, process in self.processes.items():
            try:
                async with asyncio.timeout(timeout_s):
                    await process.wait()
            except TimeoutError:
                log.warning("local_stack.kill", service=service)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def wait(self) -> int:
        """Until any child exits (or a signal arrives); then stop the others."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiters = [asyncio.ensure_future(p.wait()) for p in self.processes.values()]
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([*waiters, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*waiters, stopper):
                task.cancel()
            await asyncio.gather(*waiters, stopper, return_exceptions=True)
            await self.stop()
        return 0


def local_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a local stack: one shared service token, the engine when there is no API key."""
    env = dict(base if base is not None else os.environ)
    if not env.get("SWITCHBOARD_SERVICE_TOKEN"):
        import secrets

        env["SWITCHBOARD_SERVICE_TOKEN"] = "local-" + secrets.token_urlsafe(24)
    return env


def serve_all(*, host: str = "127.0.0.1") -> int:
    env = local_environment()
    services = ("ai", "app", "voice") if env.get("OPENAI_API_KEY") else ("ai", "app", "engine", "voice")
    stack = LocalStack(ports=DEFAULT_PORTS, env=env, host=host, services=services)

    async def run() -> int:
        await stack.start()
        print(f"switchboard: serving {', '.join(services)} on {host} (voice on :{DEFAULT_PORTS['voice']})",
              flush=True)
        return await stack.wait()

    return asyncio.run(run())

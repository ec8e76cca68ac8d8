"""A whole deployment on this machine, as an operator runs it at scale (contract §7): several real voice
server processes, one AI and one App server process, one throwaway PostgreSQL database for the shared state,
and HAProxy round-robin with no affinity in front of both the webhook and the stream.

The model is FakeRealtimeServer and Twilio's REST API is FakeTwilioRest, both on 127.0.0.1 in the test's
process; callers are TwilioCaller, signing as Twilio does against the load balancer's public URL. Every
process is stopped (and HAProxy too) when the context exits, even on failure. Logs go to the work folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from switchboard.fakes.realtime_server import FakeRealtimeServer
from switchboard.fakes.twilio_rest import FakeTwilioRest
from switchboard.simulator.twilio_caller import TwilioCaller
from tests.bridge.harness import ACCOUNT_SID, API_KEY, AUTH_TOKEN, SERVICE_TOKEN, load_tenant_yaml

TENANTS_YAML = """
tenants:
  - key: acme-support
    company: Acme Outdoor
    numbers: ["+15551230001"]
    greeting: "Thanks for calling Acme Outdoor, how can I help?"
    instructions: "You help callers with orders, returns and store hours."
    voice: {provider: openai, name: marin, speed: 1.0}
    credits: 1000
  - key: tiny-shop
    company: Tiny Shop
    numbers: ["+15551230009"]
    greeting: "Tiny Shop, hello."
    instructions: "Be brief."
    voice: {provider: openai, name: cedar, speed: 1.0}
    credits: 1000
    max_concurrent_calls: 2
"""
ACME_NUMBER = "+15551230001"
TINY_NUMBER = "+15551230009"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def haproxy_config(lb_port: int, voice_ports: dict[str, int], *, per_replica_route: bool) -> str:
    """Round-robin, no affinity; readiness decides who gets new work; a 503 (draining) or a refused
    connection is retried on another server. With `per_replica_route`, `/twilio-stream/<name>/...` goes to
    the server `<name>` (the pre-opened session's) while it is up."""
    servers = "\n".join(f"  server {name} 127.0.0.1:{port} check" for name, port in voice_ports.items())
    routes = ""
    if per_replica_route:
        routes = "\n".join(
            f"  use-server {name} if {{ path_beg /twilio-stream/{name}/ }}" for name in voice_ports) + "\n"
    return f"""global
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout http-request 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout 503
frontend public
  bind 127.0.0.1:{lb_port}
  default_backend voice
backend voice
  balance roundrobin
  option http-buffer-request
  option httpchk GET /health-check/ready
  http-check expect status 200
  timeout check 2s
  default-server inter 150ms fall 2 rise 2
{routes}{servers}
"""


@dataclass
class Service:
    name: str
    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    workdir: Path
    model: FakeRealtimeServer
    rest: FakeTwilioRest
    state_url: str
    lb_port: int
    ai: Service
    app: Service
    voices: dict[str, Service]
    voice_env: dict[str, str]
    base_env: dict[str, str]
    http: httpx.AsyncClient
    haproxy: asyncio.subprocess.Process | None = None
    extra_procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def caller(self, **kwargs: Any) -> TwilioCaller:
        return TwilioCaller(self.public_url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID, **kwargs)

    # ------------------------------------------------------------------ processes
    async def _spawn(self, service: Service, kind: str, env: dict[str, str]) -> None:
        log = (self.workdir / f"{service.name}.log").open("ab")
        try:
            service.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard.cli", "serve", kind, "--host", "127.0.0.1",
                "--port", str(service.port), env=env, stdout=log, stderr=log,
            )
        finally:
            log.close()

    async def wait_healthy(self, service: Service, path: str = "/health-check/live") -> None:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                assert service.process is not None
                if service.process.returncode is not None:
                    raise RuntimeError(f"{service.name} exited with {service.process.returncode}: "
                                       f"{self.log(service.name)[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await self.http.get(service.url + path, timeout=1.0)).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start_voice(self, name: str) -> None:
        service = self.voices[name]
        env = {**self.voice_env, "SWITCHBOARD_INSTANCE_ID": name,
               "SWITCHBOARD_OUTBOX_DIR": str(self.workdir / f"outbox-{name}")}
        await self._spawn(service, "voice", env)

    async def start_app(self) -> None:
        await self._spawn(self.app, "app", {**self.base_env,
                                            "APP_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir}/app.db"})
        await self.wait_healthy(self.app)

    async def stop(self, service: Service, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        process = service.process
        if process is None:
            return 0
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout_s):
                return await process.wait()
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def wait_in_rotation(self, names: list[str], *, is_up: bool = True, timeout_s: float = 10.0) -> None:
        """Until HAProxy's readiness checks see these servers up (or down): new work goes (or not) there."""
        async with asyncio.timeout(timeout_s):
            while True:
                up = {name for name in names
                      if (await self._ready(self.voices[name]))}
                if (up == set(names)) if is_up else not up:
                    # Two further check intervals: HAProxy needs `rise 2` checks to agree.
                    await asyncio.sleep(0.4)
                    return
                await asyncio.sleep(0.05)

    async def _ready(self, service: Service) -> bool:
        try:
            return (await self.http.get(service.url + "/health-check/ready", timeout=1.0)).status_code == 200
        except httpx.HTTPError:
            return False

    # ------------------------------------------------------------------ what the servers show
    async def conversation(self, call_sid: str) -> dict[str, Any] | None:
        response = await self.http.get(self.app.url + "/api/conversations", params={"call_sid": call_sid},
                                       headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=5.0)
        response.raise_for_status()
        found = response.json()["conversations"]
        return found[0] if found else None

    async def wait_for_ended_record(self, call_sid: str, timeout_s: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    record = await self.conversation(call_sid)
                    if record is not None and record["status"] == "ended":
                        return record
                await asyncio.sleep(0.1)

    async def credits(self, number: str) -> int:
        response = await self.http.post(self.ai.url + "/voiceagent/resolve_tenant/", json={"to": number},
                                        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=5.0)
        return int(response.json()["credits"])

    async def wait_for_credits(self, number: str, credits: int, timeout_s: float = 20.0) -> None:
        """Until the tenant's balance is `credits` (the voice servers charge right after the record)."""
        async with asyncio.timeout(timeout_s):
            while (await self.credits(number)) != credits:  # noqa: ASYNC110 - polling the AI server
                await asyncio.sleep(0.1)

    async def charged_minutes(self, tenant: str, call_sid: str) -> tuple[int, bool]:
        """Asks the AI server to charge 0 s again: it answers the first charge's minutes (charged once).
        Only after the call's charge is in (`wait_for_credits`), or this probe would be the first charge."""
        response = await self.http.post(
            self.ai.url + "/voiceagent/charge_call/", json={"bot_profile_key": tenant, "call_sid": call_sid,
                                                             "duration_s": 0.0},
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=5.0)
        body = response.json()
        return int(body["minutes"]), bool(body["already_charged"])

    async def metric(self, name: str, sample: str, labels: dict[str, str] | None = None) -> float:
        """A sample from one voice server's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = (await self.http.get(self.voices[name].url + "/metrics", timeout=5.0)).text
        for family in text_string_to_metric_families(text):
            for value in family.samples:
                if value.name == sample and all(value.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(value.value)
        return 0.0


def sessions_by_call(model: FakeRealtimeServer) -> dict[str, list[Any]]:
    """The fake model's sessions, by the call SID in their instructions (contract §5: caller metadata)."""
    found: dict[str, list[Any]] = {}
    for session in model.sessions:
        updates = session.events_of("session.update")
        if not updates:
            continue
        instructions = str(updates[0]["session"].get("instructions", ""))
        for line in instructions.splitlines():
            if line.startswith("call_sid="):
                found.setdefault(line.removeprefix("call_sid="), []).append(session)
    return found


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, state_url: str, *, replicas: int = 3, per_replica_route: bool = False,
                  model: FakeRealtimeServer | None = None, **voice_settings: str) -> AsyncIterator[Cluster]:
    """Start everything; yields once every server answers its health check and HAProxy routes to all."""
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    ai_db = f"sqlite+aiosqlite:///{tmp_path}/ai.db"
    await load_tenant_yaml(ai_db, TENANTS_YAML, tmp_path)
    base_env = {key: value for key, value in os.environ.items() if not key.startswith(("SWITCHBOARD_", "OPENAI_",
                                                                                        "TWILIO_", "OTEL_"))}
    base_env.update({"SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "SWITCHBOARD_LOG_LEVEL": "INFO",
                     "SWITCHBOARD_LOG_FORMAT": "json"})
    lb_port = free_port()
    voices = {f"voice-{n}": Service(f"voice-{n}", free_port()) for n in range(1, replicas + 1)}
    async with contextlib.AsyncExitStack() as stack:
        model = await stack.enter_async_context(model or FakeRealtimeServer(api_key=API_KEY))
        rest = await stack.enter_async_context(
            FakeTwilioRest(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, auto_create_calls=True))
        http = await stack.enter_async_context(httpx.AsyncClient())
        ai, app = Service("ai", free_port()), Service("app", free_port())
        voice_env = {
            **base_env, "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": model.realtime_url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_API_BASE_URL": rest.base_url,
            "AI_SERVER_URL": ai.url, "APP_SERVER_URL": app.url, "PUBLIC_BASE_URL": f"http://127.0.0.1:{lb_port}",
            "SWITCHBOARD_STATE_URL": state_url, "SWITCHBOARD_STATE_HEARTBEAT_S": "0.5",  # "" = unset
            "SWITCHBOARD_DRAIN_TIMEOUT_S": "60",
            **voice_settings,
        }
        deployment = Cluster(workdir=tmp_path, model=model, rest=rest, state_url=state_url, lb_port=lb_port,
                             ai=ai, app=app, voices=voices, voice_env=voice_env, base_env=base_env, http=http)

        async def stop_all() -> None:
            for service in (*voices.values(), app, ai):
                await deployment.stop(service, signal.SIGKILL if service in voices.values() else signal.SIGTERM,
                                      timeout_s=10.0)
            if deployment.haproxy is not None and deployment.haproxy.returncode is None:
                deployment.haproxy.terminate()
                await deployment.haproxy.wait()

        stack.push_async_callback(stop_all)
        await deployment._spawn(ai, "ai", {**base_env, "AI_DATABASE_URL": ai_db})
        await deployment.start_app()
        await deployment.wait_healthy(ai)
        # The first voice server creates the shared schema; the others start beside it.
        names = list(voices)
        await deployment.start_voice(names[0])
        await deployment.wait_healthy(voices[names[0]])
        for name in names[1:]:
            await deployment.start_voice(name)
        for name in names[1:]:
            await deployment.wait_healthy(voices[name])
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(lb_port, {n: s.port for n, s in voices.items()},
                                         per_replica_route=per_replica_route))
        haproxy_log = (tmp_path / "haproxy.log").open("ab")
        try:
            deployment.haproxy = await asyncio.create_subprocess_exec(
                "haproxy", "-db", "-f", str(config), stdout=haproxy_log, stderr=haproxy_log)
        finally:
            haproxy_log.close()
        await deployment.wait_in_rotation(names)
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(deployment.public_url + "/health-check/live", timeout=1.0)).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield deployment

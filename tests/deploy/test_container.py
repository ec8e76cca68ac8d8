"""The container image: built by deploy/image/build.sh, the three services start from it on the machine's
network, pass their health checks, and answer one simulated call end to end (contract §1).

The model is the fake Realtime server, run by the test (the image is built without the offline engine);
the databases are a throwaway PostgreSQL database, migrated and loaded by the image's own commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from switchboard.fakes.realtime_server import FakeRealtimeServer, stream_audio
from switchboard.simulator.twilio_caller import TwilioCaller
from tests.bridge.harness import ACCOUNT_SID, API_KEY, AUTH_TOKEN, SERVICE_TOKEN, TENANT_YAML
from tests.deploy.chart import ROOT

pytestmark = [pytest.mark.container, pytest.mark.postgres]

BUILD_TIMEOUT_S = 1200
PODMAN_TIMEOUT_S = 120
START_TIMEOUT_S = 90
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "var" / "containers" / "containers.conf")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def image() -> str:
    """Build (or find up to date in podman's layer cache) the image; its name."""
    result = subprocess.run(["bash", str(ROOT / "deploy" / "image" / "build.sh")], capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


async def _podman(*args: str, timeout_s: float = PODMAN_TIMEOUT_S) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "podman", *args, env=PODMAN_ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


# What the Helm chart's securityContext imposes: a read-only root filesystem with writable scratch space
# where the chart mounts emptyDirs, no capabilities, no privilege escalation, the image's non-root user.
LOCKED_DOWN = ["--read-only", "--tmpfs", "/var/lib/switchboard:rw,U", "--tmpfs", "/tmp:rw,U",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001:10001"]


def _env_args(env: dict[str, str]) -> list[str]:
    return [item for name, value in env.items() for item in ("--env", f"{name}={value}")]


@contextlib.asynccontextmanager
async def _containers() -> AsyncIterator[list[str]]:
    """Names of the containers a test started; every one is removed at the end, even on failure."""
    names: list[str] = []
    try:
        yield names
    except BaseException:
        for name in names:  # shown by pytest with the failure
            print(f"--- logs of {name} ---\n{(await _podman('logs', name))[1][-4000:]}")
        raise
    finally:
        if names:
            await _podman("rm", "--force", "--time", "2", *names)


async def _start(names: list[str], image: str, env: dict[str, str], *args: str) -> str:
    name = f"sb-test-{uuid.uuid4().hex[:10]}"
    names.append(name)
    code, out = await _podman("run", "--detach", "--name", name, "--network", "host", *LOCKED_DOWN, *_env_args(env),
                              image, *args)
    assert code == 0, out
    return name


async def _wait_ready(http: httpx.AsyncClient, url: str, name: str) -> None:
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url + "/health-check/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
    except TimeoutError:
        _, logs = await _podman("logs", name)
        pytest.fail(f"{name} never became ready at {url}:\n{logs[-3000:]}")


async def test_the_three_services_start_from_the_image_and_answer_a_call(image: str, postgres_url: str,
                                                                         tmp_path: Path) -> None:
    ports = {service: _free_port() for service in ("voice", "ai", "app")}
    urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    databases = {"AI_DATABASE_URL": postgres_url, "APP_DATABASE_URL": postgres_url}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANT_YAML)
    tenants.chmod(0o644)
    common = {"SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN, "SWITCHBOARD_LOG_LEVEL": "WARNING"}

    # What the chart's migrations Job runs, then the operator's tenant load, both from the image.
    code, out = await _podman("run", "--rm", "--network", "host", *LOCKED_DOWN, *_env_args(databases), image,
                              "migrate")
    assert code == 0 and "migrated the app database" in out, out
    code, out = await _podman("run", "--rm", "--network", "host", *LOCKED_DOWN, "--volume",
                              f"{tenants}:/tenants.yaml:ro", *_env_args(databases), image, "tenants", "load",
                              "/tenants.yaml")
    assert code == 0 and "loaded /tenants.yaml" in out, out

    model = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=400))
    async with _containers() as names, model, httpx.AsyncClient(timeout=5) as http:
        ai = await _start(names, image, {**common, "AI_DATABASE_URL": postgres_url},
                          "serve", "ai", "--host", "127.0.0.1", "--port", str(ports["ai"]))
        app = await _start(names, image, {**common, "APP_DATABASE_URL": postgres_url},
                           "serve", "app", "--host", "127.0.0.1", "--port", str(ports["app"]))
        voice = await _start(names, image, {
            **common, "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": model.realtime_url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "PUBLIC_BASE_URL": urls["voice"],
            "AI_SERVER_URL": urls["ai"], "APP_SERVER_URL": urls["app"],
        }, "serve", "voice", "--host", "127.0.0.1", "--port", str(ports["voice"]))
        for service, name in (("ai", ai), ("app", app), ("voice", voice)):
            await _wait_ready(http, urls[service], name)
            assert (await http.get(urls[service] + "/health-check/live")).status_code == 200

        async with TwilioCaller(urls["voice"], auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as caller:
            answer = await caller.place_call(to="+15551230001", from_="+15557654321")
            assert answer.status_code == 200
            session = await model.wait_for_session(timeout_s=15)
            await caller.connect_stream()
            await session.wait_for_event("response.create", timeout_s=15)
            # The greeting reached the caller through the container's voice server.
            await caller.wait_for(lambda: len(caller.heard_mulaw) >= 400 * 8 and not caller.has_unplayed_audio,
                                  timeout_s=15)
            metrics = (await http.get(urls["voice"] + "/metrics")).text
            assert "switchboard_live_calls 1.0" in metrics  # the gauge the chart's HPA scales on
            await caller.hang_up()

        # The call's record arrives at the App server in the container.
        headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
        async with asyncio.timeout(20):
            while True:
                response = await http.get(urls["app"] + "/api/conversations", params={"call_sid": caller.call_sid},
                                          headers=headers)
                assert response.status_code == 200, response.text
                found = response.json()["conversations"]
                if found and found[0]["status"] == "ended":
                    break
                await asyncio.sleep(0.2)
        assert found[0]["tenant"] == "acme-support"
        assert found[0]["caller"] != "+15557654321"
        assert len(model.sessions) == 1

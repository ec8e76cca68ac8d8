"""The container image and the chart together: the image built by deploy/image/build.sh runs the pods the
Helm chart renders (their args, env, ConfigMaps, Secret and securityContext, translated to `podman run` by
tests/deploy/pods.py) on the machine's network. The migrations Job migrates, the AI, App and voice servers
pass the chart's probes, and one simulated call is answered end to end (contract §1).

The model is the fake Realtime server, run by the test (the image is built without the offline engine);
the databases are a throwaway PostgreSQL database.
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
from tests.deploy.chart import ROOT, install_helm, render, validate
from tests.deploy.pods import http_port, podman_args, probe_path

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


async def _start(names: list[str], run_args: list[str]) -> None:
    names.append(run_args[run_args.index("--name") + 1])
    code, out = await _podman("run", "--detach", *run_args)
    assert code == 0, out


async def _wait_ready(http: httpx.AsyncClient, url: str, name: str) -> None:
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
    except TimeoutError:
        _, logs = await _podman("logs", name)
        pytest.fail(f"{name} never became ready at {url}:\n{logs[-3000:]}")


@pytest.fixture(scope="module")
def helm() -> Path:
    return install_helm()


async def test_the_charts_pods_run_from_the_image_and_answer_a_call(image: str, helm: Path, postgres_url: str,
                                                                    tmp_path: Path) -> None:
    repository, tag = image.rsplit(":", 1)
    ports = {service: _free_port() for service in ("voice", "ai", "app")}
    urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANT_YAML)
    tenants.chmod(0o644)
    model = FakeRealtimeServer(api_key=API_KEY, default_script=stream_audio(ms=400))
    async with model, _containers() as names, httpx.AsyncClient(timeout=5) as http:
        # The chart as an operator would install it, with this machine's addresses where the cluster's
        # Services would be: the host network has no cluster DNS.
        manifests = render(helm, sets=[
            f"image.repository={repository}", f"image.tag={tag}",
            *(f"{service}.port={port}" for service, port in ports.items()),
            f"config.voice.PUBLIC_BASE_URL={urls['voice']}", f"config.voice.AI_SERVER_URL={urls['ai']}",
            f"config.voice.APP_SERVER_URL={urls['app']}", f"config.voice.OPENAI_REALTIME_URL={model.realtime_url}",
            "config.common.SWITCHBOARD_LOG_LEVEL=WARNING",
            f"secrets.values.AI_DATABASE_URL={postgres_url}", f"secrets.values.APP_DATABASE_URL={postgres_url}",
            f"secrets.values.SWITCHBOARD_SERVICE_TOKEN={SERVICE_TOKEN}", f"secrets.values.OPENAI_API_KEY={API_KEY}",
            f"secrets.values.TWILIO_AUTH_TOKEN={AUTH_TOKEN}", f"secrets.values.TWILIO_ACCOUNT_SID={ACCOUNT_SID}",
        ])
        validate(manifests)

        # The migrations hook Job, then the operator's tenant load through an AI server pod.
        code, out = await _podman("run", "--rm", *podman_args(manifests, "Job", "sb-switchboard-migrate",
                                                               f"sb-test-migrate-{uuid.uuid4().hex[:8]}"))
        assert code == 0 and "migrated the app database" in out, out
        code, out = await _podman("run", "--rm", "--volume", f"{tenants}:/tenants.yaml:ro", *podman_args(
            manifests, "Deployment", "sb-switchboard-ai", f"sb-test-tenants-{uuid.uuid4().hex[:8]}",
            args=["tenants", "load", "/tenants.yaml"]))
        assert code == 0 and "loaded /tenants.yaml" in out, out

        for service in ("ai", "app", "voice"):
            deployment = f"sb-switchboard-{service}"
            assert http_port(manifests, deployment) == ports[service]
            await _start(names, podman_args(manifests, "Deployment", deployment,
                                            f"{deployment}-{uuid.uuid4().hex[:5]}-test"))
        for service in ("ai", "app", "voice"):
            deployment = f"sb-switchboard-{service}"
            await _wait_ready(http, urls[service] + probe_path(manifests, deployment, "readinessProbe"), deployment)
            live = await http.get(urls[service] + probe_path(manifests, deployment, "livenessProbe"))
            assert live.status_code == 200

        async with TwilioCaller(urls["voice"], auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as caller:
            answer = await caller.place_call(to="+15551230001", from_="+15557654321")
            assert answer.status_code == 200
            session = await model.wait_for_session(timeout_s=15)
            await caller.connect_stream()
            await session.wait_for_event("response.create", timeout_s=15)
            # The greeting reached the caller through the voice server in its container.
            await caller.wait_for(lambda: len(caller.heard_mulaw) >= 400 * 8 and not caller.has_unplayed_audio,
                                  timeout_s=15)
            metrics = (await http.get(urls["voice"] + "/metrics")).text
            assert "switchboard_live_calls 1.0" in metrics  # the gauge the chart's HPA scales on
            await caller.hang_up()

        # The call's record arrives at the App server in its container.
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

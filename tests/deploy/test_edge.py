"""The HAProxy examples in deploy/edge/: both pass `haproxy -c`, and the static one, run for real in front of
two voice-server stand-ins, sends /twilio-stream/<replica>/... to that replica while it is ready, to another
one once its readiness fails, and spreads webhooks over both."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.fakes.loopback import LoopbackServer
from tests.deploy.chart import ROOT
from tests.deploy.cluster_dns import ClusterDns

pytestmark = pytest.mark.multiprocess

EDGE = ROOT / "deploy" / "edge"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("config", ["haproxy-kubernetes.cfg", "haproxy-static.cfg"])
def test_haproxy_examples_are_valid_configurations(config: str) -> None:
    result = subprocess.run(["haproxy", "-c", "-f", str(EDGE / config)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


class StandIn:
    """Answers like a voice server as far as the edge can tell: readiness, and which server took a request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True

    def app(self) -> Starlette:
        async def ready(request: Request) -> Response:
            return Response(status_code=200 if self.ready else 503)

        async def anything(request: Request) -> Response:
            return JSONResponse({"server": self.name, "path": request.url.path})

        return Starlette(routes=[Route("/health-check/ready", ready),
                                 Route("/{path:path}", anything, methods=["GET", "POST"])])


@contextlib.asynccontextmanager
async def _haproxy(config: Path) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec("haproxy", "-db", "-f", str(config),
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    try:
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(10):
            await process.wait()


async def _servers_hit(http: httpx.AsyncClient, method: str, path: str, times: int) -> list[str]:
    hits = []
    for _ in range(times):
        response = await http.request(method, path)
        assert response.status_code == 200, response.text
        hits.append(response.json()["server"])
    return hits


POD_A = "switchboard-voice-5d8f7c6b9-a1b2c"
POD_B = "switchboard-voice-5d8f7c6b9-x9y8z"


def _free_port_on(*hosts: str) -> int:
    """A port free on every one of these loopback addresses (each pod stand-in has its own IP, one port)."""
    for _ in range(50):
        port = _free_port()
        with contextlib.ExitStack() as stack:
            try:
                for host in hosts:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no common free port")


async def test_kubernetes_haproxy_routes_a_stream_to_the_pod_named_in_its_path(tmp_path: Path) -> None:
    """haproxy-kubernetes.cfg as shipped, with only its listen address, DNS server and pod port filled in."""
    a, b = StandIn(POD_A), StandIn(POD_B)
    pod_port = _free_port_on("127.0.0.2", "127.0.0.3")
    cluster_dns = ClusterDns("switchboard-voice-pods.switchboard.svc.cluster.local", pod_port,
                             pods={POD_A: "127.0.0.2", POD_B: "127.0.0.3"})
    dns_port = await cluster_dns.start()
    try:
        async with LoopbackServer(a.app(), host="127.0.0.2", port=pod_port, name="pod-a"), \
                LoopbackServer(b.app(), host="127.0.0.3", port=pod_port, name="pod-b"):
            port = _free_port()
            text = (EDGE / "haproxy-kubernetes.cfg").read_text()
            for old, new in (("bind :8080", f"bind 127.0.0.1:{port}"), ("log stdout format raw local0", ""),
                             ("parse-resolv-conf", f"nameserver cluster 127.0.0.1:{dns_port}"),
                             ("server replica 0.0.0.0:8080", f"server replica 0.0.0.0:{pod_port}")):
                assert old in text
                text = text.replace(old, new)
            config = tmp_path / "haproxy.cfg"
            config.write_text(text)
            async with _haproxy(config), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                # The voice pods are found through the headless Service's SRV record.
                async with asyncio.timeout(20):
                    while True:
                        with contextlib.suppress(httpx.HTTPError, AssertionError):
                            if set(await _servers_hit(http, "POST", "/twilio-voice-webhook", 4)) == {POD_A, POD_B}:
                                break
                        await asyncio.sleep(0.3)
                assert await _servers_hit(http, "GET", f"/twilio-stream/{POD_B}/token", 6) == [POD_B] * 6
                assert await _servers_hit(http, "GET", f"/twilio-stream/{POD_A}/token", 6) == [POD_A] * 6
                # A name that is no pod of the Service, or no DNS label at all, is balanced like any request:
                # the route never reaches an address outside the voice pods.
                for segment in ("switchboard-voice-gone-00000", "example.com", "127.0.0.1:22"):
                    hits = await _servers_hit(http, "GET", f"/twilio-stream/{segment}/token", 4)
                    assert set(hits) == {POD_A, POD_B}, segment
                assert ("example.com.switchboard-voice-pods.switchboard.svc.cluster.local.", "A") \
                    not in cluster_dns.queries
                # Pod B starts draining: not ready, so the headless Service drops it; its streams go to A.
                b.ready = False
                cluster_dns.remove(POD_B)
                async with asyncio.timeout(20):
                    while set(await _servers_hit(http, "GET", f"/twilio-stream/{POD_B}/token", 3)) != {POD_A}:  # noqa: ASYNC110
                        await asyncio.sleep(0.3)
                assert await _servers_hit(http, "POST", "/twilio-voice-webhook", 4) == [POD_A] * 4
    finally:
        cluster_dns.close()


async def test_static_haproxy_routes_a_stream_to_its_replica_and_falls_back_when_it_drains(tmp_path: Path) -> None:
    a, b = StandIn("voice-a"), StandIn("voice-b")
    async with LoopbackServer(a.app(), name="voice-a") as server_a, LoopbackServer(b.app(), name="voice-b") as server_b:
        port = _free_port()
        text = (EDGE / "haproxy-static.cfg").read_text()
        text = text.replace("bind :8080", f"bind 127.0.0.1:{port}").replace("log stdout format raw local0", "")
        text = re.sub(r"^(\s+)server voice-a \S+", rf"\1server voice-a 127.0.0.1:{server_a.port}", text, flags=re.M)
        text = re.sub(r"^(\s+)server voice-b \S+", rf"\1server voice-b 127.0.0.1:{server_b.port}", text, flags=re.M)
        text = re.sub(r".*voice-c.*\n", "", text)
        config = tmp_path / "haproxy.cfg"
        config.write_text(text)
        async with _haproxy(config), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            async with asyncio.timeout(15):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if set(await _servers_hit(http, "POST", "/twilio-voice-webhook", 4)) == {"voice-a", "voice-b"}:
                            break
                    await asyncio.sleep(0.2)
            assert await _servers_hit(http, "GET", "/twilio-stream/voice-b/token", 6) == ["voice-b"] * 6
            assert await _servers_hit(http, "GET", "/twilio-stream/voice-a/token", 6) == ["voice-a"] * 6
            # voice-b starts draining: its readiness fails, its streams and new webhooks go to voice-a.
            b.ready = False
            async with asyncio.timeout(10):
                while set(await _servers_hit(http, "GET", "/twilio-stream/voice-b/token", 3)) != {"voice-a"}:  # noqa: ASYNC110 (polling HAProxy over HTTP)
                    await asyncio.sleep(0.2)
            assert await _servers_hit(http, "POST", "/twilio-voice-webhook", 6) == ["voice-a"] * 6

"""CPU per HTTP request of the clients the voice server could use for its App server outbox.

A tiny HTTP/1.1 server runs in a child process (so its CPU is not counted); this process posts a typical
outbox message N times, keep-alive, one at a time, with each client, and prints the CPU (user + system)
per request. Why it matters: the outbox posts about once per call per turn from the event loop.

    .venv/bin/python bench/http_client_cost.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys
async def handle(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
                     b'{"ok":true}')
        await writer.drain()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

BODY = (b'{"message_id":"4f2c","role":"assistant","text":"You can return any unused item within thirty days.",'
        b'"at":"2026-11-26T05:00:00Z","seq":3}')
HEADERS = {"Authorization": "Bearer service-token", "Content-Type": "application/json"}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(kind: str, url: str, n: int) -> float:
    if kind == "httpx AsyncClient":
        import httpx

        async with httpx.AsyncClient() as client:
            await client.post(url, content=BODY, headers=HEADERS)
            start = cpu_s()
            for _ in range(n):
                (await client.post(url, content=BODY, headers=HEADERS)).json()
            return cpu_s() - start
    if kind == "httpx transport only":
        import httpx

        transport = httpx.AsyncHTTPTransport()

        async def once() -> None:
            response = await transport.handle_async_request(httpx.Request("POST", url, content=BODY, headers=HEADERS))
            await response.aread()
            await response.aclose()

        await once()
        start = cpu_s()
        for _ in range(n):
            await once()
        elapsed = cpu_s() - start
        await transport.aclose()
        return elapsed
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
        start = cpu_s()
        for _ in range(n):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
        return cpu_s() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        time.sleep(1.0)
        import uvloop

        url = f"http://127.0.0.1:{port}/api/conversations/CA1/messages"
        print(f"CPU per POST ({args.requests} requests, keep-alive, uvloop):")
        for kind in ("httpx AsyncClient", "httpx transport only", "aiohttp ClientSession"):
            spent = uvloop.run(measure(kind, url, args.requests))
            print(f"- {kind}: {1e6 * spent / args.requests:.0f} us")
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

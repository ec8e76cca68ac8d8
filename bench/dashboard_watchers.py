"""N dashboards watching live calls: signs in to the App server's dashboard and keeps N live-call pages'
event streams (/ui/calls/{call_sid}/events) open, spread over the calls listed live, re-opening a stream
when its call ends. Run by bench/bridge_latency.py --dashboards N; prints the events it got when stopped.

    .venv/bin/python bench/dashboard_watchers.py http://127.0.0.1:8082 EMAIL PASSWORD --count 20
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal

import httpx


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> None:
    form = await client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = await client.post("/ui/login", data={"email": email, "password": password, "csrf_token": token[1]})
    assert response.status_code == 303, response.status_code


async def live_calls(client: httpx.AsyncClient) -> list[str]:
    page = await client.get("/ui/calls", params={"status": "live"})
    return re.findall(r'<tr data-call-sid="([^"]+)"', page.text)


async def watch(client: httpx.AsyncClient, index: int, counts: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        calls = await live_calls(client)
        if not calls:
            await asyncio.sleep(0.5)
            continue
        call_sid = calls[index % len(calls)]
        async with client.stream("GET", f"/ui/calls/{call_sid}/events", timeout=httpx.Timeout(10, read=60)) as events:
            async for line in events.aiter_lines():
                if line.startswith("event:"):
                    counts[index] += 1
                if stop.is_set():
                    return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app_url")
    parser.add_argument("email")
    parser.add_argument("password")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts = [0] * args.count
    async with httpx.AsyncClient(base_url=args.app_url, timeout=10) as client:
        await sign_in(client, args.email, args.password)
        async with asyncio.TaskGroup() as tasks:
            watchers = [tasks.create_task(watch(client, i, counts, stop), name=f"watcher-{i}")
                        for i in range(args.count)]
            await stop.wait()
            for watcher in watchers:
                watcher.cancel()
    print(f"dashboards: {args.count} streams, {sum(counts)} events", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

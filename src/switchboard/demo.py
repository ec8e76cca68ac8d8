"""`switchboard demo` (what `make demo` runs): the whole system on embedded defaults, one real simulated call.

It starts the AI server, the App server, the local speech engine and the voice server on SQLite with a
demo tenant (a small shop with a knowledge base and an order-lookup tool served by the demo itself),
then places a call through the real signed webhook and Media Stream path. The caller's lines are
synthesized speech; the agent answers by voice. It prints the conversation as it happens with per-turn
latency, exercises a tool call fed by digits typed on the keypad and a barge-in, ends with a transfer to a
human that nobody answers (a fake Twilio REST API dials as Twilio would and posts the `<Dial action>`), so
the caller is told they will be called back and a callback ticket is created, and writes the call's audio
as a two-channel WAV (caller left, agent right).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import socket
import sys
import xml.etree.ElementTree as ElementTree
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from switchboard.fakes.loopback import LoopbackServer
from switchboard.fakes.twilio_rest import FakeTwilioRest
from switchboard.local_stack import LocalStack
from switchboard.simulator.speech import mulaw_silence, neural_voice_available, speak_mulaw
from switchboard.simulator.twilio_caller import AgentTurn, TwilioCaller

WORKDIR = Path("var/demo")
CALLER_NUMBER = "+15557654321"
DEMO_NUMBER = "+15551230001"

# (what the caller says, whether the caller interrupts the answer); "keys:..." is typed on the keypad.
SCRIPT: tuple[tuple[str, bool], ...] = (
    ("What is your return policy?", False),
    ("Can you check my order?", False),
    ("keys:4512#", False),
    ("How long does standard shipping take?", True),
    ("Sorry, what are your store hours on Saturday?", False),
    ("Can I speak to a human please?", False),
)
BARGE_IN_AFTER_S = 1.2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _engine_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("faster_whisper", "hibari", "webrtcvad"))


def _order_tool_app() -> FastAPI:
    app = FastAPI(title="demo order lookup")

    @app.post("/orders/lookup")
    async def lookup(body: dict[str, Any]) -> dict[str, Any]:
        number = str(body.get("order_number", "")).strip()
        return {"order_number": number, "status": "shipped", "carrier": "UPS",
                "summary": f"Order {number} shipped yesterday and arrives on Friday."}

    return app


def _write_tenant_file(order_tool_url: str) -> Path:
    data = resources.files("switchboard.demo_data")
    kb = WORKDIR / "kb"
    kb.mkdir(parents=True, exist_ok=True)
    for name in ("returns.md", "shipping.md"):
        (kb / name).write_text(data.joinpath("kb").joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
    text = data.joinpath("tenants.yaml").read_text(encoding="utf-8").replace("{order_tool_url}", order_tool_url)
    path = WORKDIR / "tenants.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def _agent_lines(app_http: httpx.AsyncClient, call_sid: str, seen: set[str]) -> list[str]:
    """New assistant/tool lines of the call's record at the App server (the transcript of what was said)."""
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        response = await app_http.get("/api/conversations", params={"call_sid": call_sid})
        lines: list[str] = []
        for conversation in response.json()["conversations"]:
            for message in conversation["messages"]:
                key = f"{message['role']}:{message['at']}:{message.get('name')}:{message['text']}"
                if key in seen or message["role"] == "user":
                    continue
                seen.add(key)
                if message["role"] == "tool":
                    lines.append(f"  [tool {message.get('name')}: {message.get('duration_ms', 0):.0f} ms]")
                elif message["text"]:
                    lines.append(f"agent: {message['text']}")
        return lines
    return []


async def _wait_answer(caller: TwilioCaller, turn: AgentTurn, *, quiet_s: float = 1.2) -> None:
    with contextlib.suppress(TimeoutError):
        await caller.wait_for(lambda: turn.first_media_at_s is not None or caller.is_stream_closed, 20.0)
        await caller.wait_for_agent_quiet(quiet_s, timeout_s=60.0)


async def _run_demo(ports: dict[str, int], tenant_file: Path) -> int:
    engine = _engine_installed()
    print("Switchboard demo: everything runs on this machine, no API keys, no network.")
    if not engine:
        print("note: the local speech engine is not installed, so the agent's voice is SIMULATED by the in-repo "
              "fake Realtime server (tones, canned replies). Run `make demo` to install the engine.")
    token = "demo-" + secrets.token_urlsafe(18)
    auth_token = secrets.token_hex(16)
    account_sid = "AC" + secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "ELEVENLABS_API_KEY", "CARTESIA_API_KEY"}}

    # Nobody picks up the transfer: after ringing, Twilio posts the <Dial action> with DialCallStatus=no-answer.
    async with FakeTwilioRest(account_sid=account_sid, auth_token=auth_token, human="no-answer",
                              ring_s=2.0) as twilio_rest, \
            LoopbackServer(_order_tool_app(), port=ports["tool"], name="demo-order-tool", lifespan="on"):
        env.update({
            "AI_DATABASE_URL": f"sqlite+aiosqlite:///{WORKDIR}/ai.db",
            "APP_DATABASE_URL": f"sqlite+aiosqlite:///{WORKDIR}/app.db",
            "SWITCHBOARD_SERVICE_TOKEN": token,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_ACCOUNT_SID": account_sid,
            "TWILIO_API_BASE_URL": twilio_rest.base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['voice']}",
            "AI_SERVER_URL": f"http://127.0.0.1:{ports['ai']}",
            "APP_SERVER_URL": f"http://127.0.0.1:{ports['app']}",
            "SWITCHBOARD_ENGINE_URL": f"ws://127.0.0.1:{ports['engine']}/v1/realtime",
            "SWITCHBOARD_OUTBOX_DIR": str(WORKDIR / "outbox"),
            "SWITCHBOARD_LOG_FORMAT": "console",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        })
        print(f"loading the demo tenant from {tenant_file} ...")
        loader = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard.cli", "tenants", "load", str(tenant_file), env=env)
        if await loader.wait() != 0:
            print("demo: loading the tenant failed", file=sys.stderr)
            return 1
        if not engine:
            ports_for_stack = {k: v for k, v in ports.items() if k in {"voice", "ai", "app"}}
            fake = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switchboard.fakes.realtime_server", "--port", str(ports["engine"]), env=env)
        else:
            ports_for_stack = {k: v for k, v in ports.items() if k != "tool"}
            fake = None
        stack = LocalStack(ports=ports_for_stack, env=env, services=("ai", "app", "engine", "voice"))
        print("starting the AI server, App server, " + ("local speech engine" if engine else "fake model")
              + " and voice server (the engine loads Whisper and the neural voice) ...")
        try:
            await stack.start()
            return await _call(ports, env, account_sid, auth_token, twilio_rest)
        finally:
            await stack.stop()
            if fake is not None:
                fake.terminate()
                await fake.wait()


async def _call(ports: dict[str, int], env: dict[str, str], account_sid: str, auth_token: str,
                twilio_rest: FakeTwilioRest) -> int:
    voice_url = f"http://127.0.0.1:{ports['voice']}"
    app_http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['app']}", timeout=httpx.Timeout(5.0),
                                 headers={"Authorization": f"Bearer {env['SWITCHBOARD_SERVICE_TOKEN']}"})
    seen: set[str] = set()
    voice_kind = "neural voice (hibari)" if await asyncio.to_thread(neural_voice_available) else "synthetic signal"
    lines = [(text, barge, b"" if text.startswith("keys:") else await asyncio.to_thread(speak_mulaw, text))
             for text, barge in SCRIPT]
    wav_path = WORKDIR / "demo-call.wav"
    latencies: list[float] = []
    async with app_http, TwilioCaller(voice_url, auth_token=auth_token, account_sid=account_sid) as caller:
        answer = await caller.place_call(to=DEMO_NUMBER, from_=CALLER_NUMBER)
        print(f"\ncall {caller.call_sid}: webhook answered HTTP {answer.status_code} "
              f"(TwiML <Connect><Stream url={answer.stream_url}>)")
        await caller.connect_stream()
        print(f"media stream connected; the caller speaks with a {voice_kind}\n")
        greeting_turn = AgentTurn(speech_ended_at_s=asyncio.get_running_loop().time())
        caller.turns.append(greeting_turn)
        await _wait_answer(caller, greeting_turn)
        for line in await _agent_lines(app_http, caller.call_sid, seen):
            print(line)
        for text, barge_in, mulaw in lines:
            if caller.is_stream_closed:
                break
            if text.startswith("keys:"):
                keys = text.removeprefix("keys:")
                print(f"caller types on the keypad: {keys}  (Twilio sends one dtmf message per key)")
                await caller.press_keys(keys)
            else:
                print(f"caller: {text}")
                caller.say_mulaw(mulaw + mulaw_silence(100))
            await caller.wait_for_speech_sent(timeout_s=30.0)
            turn = caller.turns[-1]
            if barge_in:
                with contextlib.suppress(TimeoutError):
                    await caller.wait_for(lambda t=turn: t.first_media_at_s is not None, 20.0)  # type: ignore[misc]
                await asyncio.sleep(BARGE_IN_AFTER_S)
                clears = caller.clears
                _print_turn(turn, latencies, suffix=" (the caller interrupts)")
                continue_text = "Sorry, never mind."
                print(f"caller (barging in): {continue_text}")
                caller.say_mulaw(await asyncio.to_thread(speak_mulaw, continue_text) + mulaw_silence(100))
                await caller.wait_for_speech_sent(timeout_s=30.0)
                print("  [barge-in: the voice server cleared the agent's audio]" if caller.clears > clears
                      else "  [barge-in: no clear was sent]")
                await _wait_answer(caller, caller.turns[-1])
                for out in await _agent_lines(app_http, caller.call_sid, seen):
                    print(out)
                continue
            await _wait_answer(caller, turn)
            await asyncio.sleep(0.2)
            for out in await _agent_lines(app_http, caller.call_sid, seen):
                print(out)
            _print_turn(turn, latencies)
        with contextlib.suppress(TimeoutError):
            await caller.wait_for_stream_closed(timeout_s=20.0)
        transferred = [r for r in twilio_rest.requests if "<Dial" in r.form.get("Twiml", "")]
        if transferred:
            print("\nthe agent transferred the call: Twilio REST received <Dial callerId action timeout>"
                  "<Number url> (a warm transfer)")
            await _print_transfer_outcome(twilio_rest, app_http, caller.call_sid)
        if not caller.is_stream_closed:
            await caller.hang_up()
            print("caller hung up")
        await asyncio.to_thread(caller.write_wav, wav_path)
    if latencies:
        ordered = sorted(latencies)
        print(f"\nturn latency (caller stops speaking -> first agent audio at the caller): "
              f"median {ordered[len(ordered) // 2]:.0f} ms, max {ordered[-1]:.0f} ms over {len(ordered)} turns")
    print(f"call audio (caller left, agent right): {wav_path.resolve()}")
    return 0 if caller.is_stream_closed else 1


async def _print_transfer_outcome(twilio_rest: FakeTwilioRest, app_http: httpx.AsyncClient, call_sid: str) -> None:
    """What Twilio did with the <Dial>, what the caller heard, and the callback ticket."""
    try:
        leg = await twilio_rest.wait_for_dial(timeout_s=30.0)
    except TimeoutError:
        print("  (Twilio's <Dial> did not finish)")
        return
    print(f"  Twilio dialled {leg.number} for {leg.timeout_s} s: DialCallStatus={leg.dial_call_status}")
    with contextlib.suppress(ElementTree.ParseError):
        said = ElementTree.fromstring(leg.action_twiml or "").findtext("Say")
        if said:
            print(f"  the <Dial action> answered; Twilio says to the caller: {said}")
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        for _ in range(20):
            tickets = (await app_http.get("/api/tickets", params={"call_sid": call_sid})).json()["tickets"]
            if tickets:
                ticket = tickets[0]
                print(f"  callback ticket #{ticket['id']} for {ticket['phone_number']}: {ticket['reason']}")
                return
            await asyncio.sleep(0.25)
    print("  (no callback ticket was created)")


def _print_turn(turn: AgentTurn, latencies: list[float], suffix: str = "") -> None:
    if turn.latency_ms is None:
        print("  (no answer)")
        return
    latencies.append(turn.latency_ms)
    print(f"  [first agent audio {turn.latency_ms:.0f} ms after the caller stopped; "
          f"{turn.heard_ms / 1000:.1f} s heard]{suffix}")


def demo_command() -> int:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    ports = {name: _free_port() for name in ("voice", "ai", "app", "engine", "tool")}
    tenant_file = _write_tenant_file(f"http://127.0.0.1:{ports['tool']}/orders/lookup")
    try:
        return asyncio.run(_run_demo(ports, tenant_file))
    except KeyboardInterrupt:
        return 130

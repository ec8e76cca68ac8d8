"""`switchboard call`: place a simulated phone call against a running voice server and report each turn.

Signs like Twilio with TWILIO_AUTH_TOKEN (and TWILIO_ACCOUNT_SID, PUBLIC_BASE_URL when set), speaks the
`--say` sentences (or streams `--wav`), prints what the agent said back with first-audio latency, and,
when APP_SERVER_URL and SWITCHBOARD_SERVICE_TOKEN are set, the stored transcript. I/O lives here; the
call itself is `TwilioCaller`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import httpx

from switchboard.simulator.speech import mulaw_silence, neural_voice_available, read_wav_as_mulaw, speak_mulaw
from switchboard.simulator.twilio_caller import AgentTurn, StreamRejected, TwilioCaller

DEFAULT_SENTENCES = ("Hi, I'd like to check on the status of my order.", "Thanks, that's all I needed.")
BARGE_IN_SENTENCE = "Sorry, can I interrupt for a second?"
GREETING_WAIT_S = 15.0
ANSWER_WAIT_S = 20.0
AGENT_QUIET_S = 1.2
BARGE_IN_AFTER_S = 0.8


def call_command(args: argparse.Namespace) -> int:
    """Run `switchboard call`; returns the process exit code (0 when the call completed)."""
    auth_token = os.environ.get("TWILIO_AUTH_TOKEN")
    if not auth_token:
        print("switchboard call: TWILIO_AUTH_TOKEN must be set (the voice server checks Twilio signatures)",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, auth_token))
    except TimeoutError:
        print(f"switchboard call: gave up after {args.timeout_s:.0f} s", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"switchboard call: could not reach the voice server at {args.voice_url}: {exc}", file=sys.stderr)
        return 1


KEYS_PREFIX = "keys:"


def script_steps(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The call's steps in command-line order: ("say", sentence) or ("keys", "4512#"); the default sentences
    when none were given. A `--say "keys:4512#"` is a keys step."""
    steps: list[tuple[str, str]] = []
    given = getattr(args, "script", None) or [
        *(("say", s) for s in getattr(args, "say", None) or []), *(("keys", k) for k in getattr(args, "keys", None) or [])]
    for kind, value in given:
        if kind == "say" and value.startswith(KEYS_PREFIX):
            kind, value = "keys", value.removeprefix(KEYS_PREFIX).strip()
        steps.append((kind, value))
    return steps or [("say", sentence) for sentence in DEFAULT_SENTENCES]


async def _utterances(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """(text, audio) per step; a keys step is ("keys:4512#", b"") and is pressed, not spoken."""
    if args.wav:
        print(f"streaming {args.wav} as the caller's audio")
        return [(f"<{args.wav}>", await asyncio.to_thread(read_wav_as_mulaw, args.wav))]
    steps = script_steps(args)
    if any(kind == "say" for kind, _ in steps):
        if await asyncio.to_thread(neural_voice_available):
            print("the caller speaks with the local neural voice (hibari)")
        else:
            print("no TTS voice is installed: the caller speaks a speech-like synthetic signal as long as each "
                  "sentence would take to say")
    return [(value, await asyncio.to_thread(speak_mulaw, value)) if kind == "say" else (KEYS_PREFIX + value, b"")
            for kind, value in steps]


def _describe_turn(turn: AgentTurn) -> str:
    latency = "no answer" if turn.latency_ms is None else f"first audio {turn.latency_ms:.0f} ms after you stopped"
    return f"agent: {turn.heard_ms / 1000:.2f} s of audio heard, {latency}"


async def _wait_for_answer(caller: TwilioCaller, turn: AgentTurn) -> None:
    try:
        await caller.wait_for(lambda: turn.first_media_at_s is not None or caller.is_stream_closed,
                              ANSWER_WAIT_S)
    except TimeoutError:
        return
    await caller.wait_for_agent_quiet(AGENT_QUIET_S, timeout_s=120.0)


async def _run(args: argparse.Namespace, auth_token: str) -> int:
    utterances = await _utterances(args)
    async with asyncio.timeout(args.timeout_s), TwilioCaller(
        args.voice_url, auth_token=auth_token, account_sid=os.environ.get("TWILIO_ACCOUNT_SID"),
        public_base_url=os.environ.get("PUBLIC_BASE_URL"),
    ) as caller:
        answer = await caller.place_call(to=args.to, from_=args.from_number)
        print(f"call {caller.call_sid}: webhook answered HTTP {answer.status_code}")
        if answer.status_code != 200:
            print(answer.twiml.strip()[:500])
            return 1
        for said in answer.said:
            print(f"agent (TwiML <Say>): {said}")
        if answer.stream_url is None:
            print("no media stream in the TwiML; the call ends here")
            return 0 if answer.hangs_up or answer.said else 1
        try:
            await caller.connect_stream()
        except StreamRejected as exc:
            print(f"the voice server refused the media stream: HTTP {exc.status_code}")
            return 1
        print(f"media stream {caller.stream_sid} connected")

        greeting_bytes = len(caller.heard_mulaw)
        try:
            await caller.wait_for(lambda: bool(caller.received) or caller.is_stream_closed, GREETING_WAIT_S)
            await caller.wait_for_agent_quiet(AGENT_QUIET_S, timeout_s=60.0)
            print(f"agent greeting: {(len(caller.heard_mulaw) - greeting_bytes) / 8000:.2f} s of audio heard")
        except TimeoutError:
            print(f"agent: no greeting within {GREETING_WAIT_S:.0f} s")

        for index, (text, mulaw) in enumerate(utterances):
            if caller.is_stream_closed:
                break
            turns_before = len(caller.turns)
            if text.startswith(KEYS_PREFIX):
                keys = text.removeprefix(KEYS_PREFIX)
                print(f"caller presses on the keypad: {keys}")
                await caller.press_keys(keys)
            else:
                print(f"caller: {text}")
                caller.say_mulaw(mulaw + mulaw_silence(100))
            await caller.wait_for_speech_sent(timeout_s=args.timeout_s)
            if len(caller.turns) == turns_before:
                print("(that audio was silent: nothing for the agent to answer)")
                continue
            turn = caller.turns[-1]
            if args.barge_in and index == 0:
                await _barge_in(caller, turn)
                turn = caller.turns[-1]
            await _wait_for_answer(caller, turn)
            print(_describe_turn(turn))

        if caller.is_stream_closed:
            print(f"the voice server ended the call (close code {caller.close_code})")
        else:
            await caller.hang_up()
            print("caller hung up")
        if caller.protocol_errors:
            print(f"warning: {len(caller.protocol_errors)} stream message(s) Twilio would reject, first: "
                  f"{caller.protocol_errors[0]}")
        if args.record:
            await asyncio.to_thread(caller.write_wav, args.record)
            print(f"recording (caller left, agent right): {args.record}")
    await print_conversation(caller.call_sid, app_url=os.environ.get("APP_SERVER_URL"),
                             token=os.environ.get("SWITCHBOARD_SERVICE_TOKEN"))
    return 0


async def _barge_in(caller: TwilioCaller, turn: AgentTurn) -> None:
    try:
        await caller.wait_for(lambda: turn.first_media_at_s is not None or caller.is_stream_closed,
                              ANSWER_WAIT_S)
    except TimeoutError:
        print("agent: no answer to interrupt")
        return
    await asyncio.sleep(BARGE_IN_AFTER_S)
    clears_before = caller.clears
    print(f"{_describe_turn(turn)} (interrupted)")
    print(f"caller (barging in): {BARGE_IN_SENTENCE}")
    caller.say_mulaw(await asyncio.to_thread(speak_mulaw, BARGE_IN_SENTENCE) + mulaw_silence(100))
    await caller.wait_for_speech_sent(timeout_s=30.0)
    print("the server cleared the agent's audio" if caller.clears > clears_before
          else "the server did not clear the agent's audio")


TIMELINE_COLUMNS = (
    ("speech_stopped_to_response_ms", "response"),
    ("speech_stopped_to_model_audio_ms", "model audio"),
    ("speech_stopped_to_media_sent_ms", "media sent"),
    ("speech_stopped_to_played_ms", "played"),
)


def format_turn_timeline(turns: list[dict[str, Any]]) -> list[str]:
    """The voice server's per-turn latency timeline as table lines (ms after the caller stopped speaking)."""
    if not turns:
        return ["per-turn latency (voice server): no complete turn was recorded"]
    lines = ["per-turn latency (voice server, ms after the caller stopped speaking):",
             "  turn" + "".join(f"{title:>13}" for _, title in TIMELINE_COLUMNS)]
    for number, turn in enumerate(turns, start=1):
        cells = []
        for key, _ in TIMELINE_COLUMNS:
            value = turn.get(key) if isinstance(turn, dict) else None
            cells.append(f"{value:>13.0f}" if isinstance(value, int | float) else f"{'-':>13}")
        lines.append(f"  {number:>4}" + "".join(cells))
    return lines


async def print_conversation(call_sid: str, *, app_url: str | None, token: str | None) -> None:
    """Print the App server's record of the call: transcript, then the voice server's per-turn timeline.

    Prints nothing when `app_url` or `token` is missing; waits up to about 2.5 s for the record to end.
    """
    if not app_url or not token:
        return
    url = app_url.rstrip("/") + "/api/conversations"
    conversation: dict[str, Any] | None = None
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
            for _ in range(5):
                response = await http.get(url, params={"call_sid": call_sid},
                                          headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
                conversations = response.json().get("conversations") or []
                conversation = conversations[0] if conversations else None
                if conversation and conversation.get("status") == "ended":
                    break
                await asyncio.sleep(0.5)
    except (httpx.HTTPError, ValueError) as exc:
        print(f"transcript unavailable ({type(exc).__name__}: {exc})")
        return
    if conversation is None:
        print("transcript unavailable (the app server has no conversation for this call yet)")
        return
    print(f"transcript ({conversation.get('status')}, end reason {conversation.get('end_reason')}):")
    for message in conversation.get("messages") or []:
        print(f"  {message.get('role')}: {message.get('text')}")
    turns = conversation.get("turns")
    if isinstance(turns, list):
        for line in format_turn_timeline(turns):
            print(line)
    if conversation.get("trace_id"):
        print(f"trace: {conversation['trace_id']}")

"""A real spoken phone call through the whole stack and the local engine (issue 5's end-to-end test).

The caller speaks synthesized sentences as μ-law over the real signed webhook and Media Stream path; the
voice server talks to the engine over the Realtime protocol; the engine hears (VAD + Whisper), looks the
answer up through the AI server's knowledge and speaks it; asking for a human reaches Twilio's REST API.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.bridge.harness import voice_stack

from switchboard.engine.app import Engine, serve_engine
from switchboard.simulator.speech import mulaw_silence

TENANT = """
tenants:
  - key: trailhead
    company: Trailhead Outfitters
    numbers: ["+15551230001"]
    greeting: "Thanks for calling Trailhead Outfitters, how can I help?"
    instructions: "You help callers with returns and store hours."
    voice: {provider: openai, name: marin, speed: 1.0}
    transfer: {number: "+15559990000", caller_id: "+15551230001"}
    credits: 100
    knowledge:
      - text: "You can return any unused item within thirty days of delivery for a full refund."
        title: Returns
      - text: "Our store is open Monday to Friday from nine to six."
        title: Hours
"""


async def _say(caller, engine: Engine, text: str) -> None:  # type: ignore[no-untyped-def]
    mulaw = await asyncio.to_thread(engine.synthesizer.synthesize_mulaw, text)
    caller.say_mulaw(mulaw + mulaw_silence(100))
    await caller.wait_for_speech_sent(timeout_s=30)


async def test_a_spoken_question_is_answered_from_knowledge_and_a_human_is_reached(
    tmp_path: Path, engine: Engine
) -> None:
    async with serve_engine(engine, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with voice_stack(tmp_path, tenant_yaml=TENANT, engine_url=f"ws://127.0.0.1:{port}/v1/realtime") as stack, \
                stack.caller() as caller:
            await caller.place_call(to="+15551230001", from_="+15557654321")
            await caller.connect_stream()
            await caller.wait_for(lambda: len(caller.heard_mulaw) > 0, timeout_s=30)
            await caller.wait_for_agent_quiet(1.0, timeout_s=30)

            await _say(caller, engine, "What is your return policy?")
            await caller.wait_for(lambda: caller.turns[-1].first_media_at_s is not None, timeout_s=30)
            await caller.wait_for_agent_quiet(1.0, timeout_s=60)
            conversation = await stack.conversation(caller.call_sid)
            said = " ".join(m["text"] for m in conversation["messages"] if m["role"] == "assistant")
            assert "thirty days" in said
            assert any(m["role"] == "tool" and m["name"] == "get_knowledge" for m in conversation["messages"])

            await _say(caller, engine, "Can I speak to a human please?")
            request = await stack.twilio_rest.wait_for_request(timeout_s=60)
            assert re.search(r'<Dial [^>]*callerId="\+15557654321"[^>]*><Number [^>]*>\+15559990000</Number></Dial>',
                             request.form["Twiml"])
            await caller.wait_for_stream_closed(timeout_s=10)

"""Engine figures: turn latency, recognition WER through mu-law, memory and install size.

Run:  .venv/bin/python bench/engine_latency.py [--turns 20]

Turn latency is what a caller waits: from `input_audio_buffer.speech_stopped` reaching the client to the
first `response.output_audio.delta` of the spoken answer. Questions go through the `get_knowledge` tool,
answered by this script at once (so the AI server's search time is not included). Caller audio is paced
in real time, 20 ms per append, as Twilio sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import statistics
import time
from importlib import metadata
from pathlib import Path

from websockets.asyncio.client import connect

from switchboard.engine.app import Engine, serve_engine

QUESTIONS = [
    "What time do you open on Saturday?", "Do you sell hiking boots?", "Where is your store located?",
    "Can I return a tent I bought last month?", "How long does shipping take?",
    "Do you have kayaks in stock?", "Is there parking near the store?", "What is your phone number?",
    "Do you offer gift cards?", "Can I change my delivery address?", "Are you open on public holidays?",
    "How much does express delivery cost?", "Do you repair bicycles?", "Can I pick up my order in the store?",
    "What payment methods do you accept?", "Do you price match other shops?",
    "How do I reset my account password?", "Do you sell sleeping bags for winter?",
    "Is the warranty included with the stove?", "Can I book a fitting for climbing shoes?",
]
KB_TEXT = ("Our store is open Monday to Friday from nine to six and on Saturday from ten to two. "
           "We sell boots, tents, kayaks, stoves and sleeping bags, and we ship orders within three days. "
           "Returns are accepted within sixty days with a receipt.")
LOCAL_DISTS = [line.split("==")[0] for line in
               (Path(__file__).resolve().parent.parent / "requirements" / "local.txt").read_text().splitlines()
               if "==" in line and not line.startswith("#")]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[-1]


def rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def install_size_mb() -> float:
    total = 0
    for name in LOCAL_DISTS:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


async def measure_turns(engine: Engine, turns: int) -> list[float]:
    latencies: list[float] = []
    async with serve_engine(engine, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None) as conn:
            await conn.recv()
            await conn.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "instructions": "Acme Outdoor",
                "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {
                    "type": "server_vad", "threshold": 0.9, "prefix_padding_ms": 300, "silence_duration_ms": 500}},
                    "output": {"format": {"type": "audio/pcmu"}}},
                "tools": [{"type": "function", "name": "get_knowledge", "description": "Search the knowledge base",
                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]}}))
            for index in range(turns):
                question = QUESTIONS[index % len(QUESTIONS)]
                caller = await engine.run(lambda q=question: engine.synthesizer.synthesize_mulaw(q))  # type: ignore[misc]
                caller = b"\xff" * 4000 + caller + b"\xff" * 8 * 900
                stopped_at: float | None = None
                first_audio_at: float | None = None

                async def pace(audio: bytes = caller) -> None:
                    started = time.perf_counter()
                    for offset in range(0, len(audio), 160):
                        await conn.send(json.dumps({"type": "input_audio_buffer.append",
                                                    "audio": base64.b64encode(audio[offset:offset + 160]).decode()}))
                        await asyncio.sleep(max(0.0, started + (offset + 160) / 8000 - time.perf_counter()))

                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(pace(), name="bench-caller")
                    while first_audio_at is None:
                        event = json.loads(await conn.recv())
                        if event["type"] == "input_audio_buffer.speech_stopped":
                            stopped_at = time.perf_counter()
                        elif event["type"] == "response.done":
                            output = event["response"]["output"]
                            if output and output[0]["type"] == "function_call":
                                await conn.send(json.dumps({"type": "conversation.item.create", "item": {
                                    "type": "function_call_output", "call_id": output[0]["call_id"],
                                    "output": json.dumps({"results": [{"title": "Store", "text": KB_TEXT,
                                                                       "source": "kb", "score": 0.5}]})}}))
                                await conn.send(json.dumps({"type": "response.create"}))
                        elif event["type"] == "response.output_audio.delta" and stopped_at is not None:
                            first_audio_at = time.perf_counter()
                    while json.loads(await conn.recv())["type"] != "response.done":
                        pass
                assert stopped_at is not None
                latencies.append((first_audio_at - stopped_at) * 1000)
    return latencies


def measure_wer(engine: Engine) -> tuple[float, int]:
    errors = total = exact = 0
    for sentence in QUESTIONS[:20]:
        heard = engine.transcriber.transcribe_mulaw(engine.synthesizer.synthesize_mulaw(sentence))
        reference, hypothesis = words(sentence), words(heard)
        errors += word_errors(reference, hypothesis)
        total += len(reference)
        exact += reference == hypothesis
    return errors / total, exact


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    engine = Engine.load()
    load_s = time.perf_counter() - started
    rss_loaded, _ = rss_mb()
    wer, exact = measure_wer(engine)
    latencies = asyncio.run(measure_turns(engine, args.turns))
    rss_now, rss_peak = rss_mb()
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(json.dumps({
        "turns": len(latencies),
        "turn_latency_ms": {"p50": round(statistics.median(latencies)), "p95": round(p95),
                            "max": round(max(latencies)), "all": [round(v) for v in latencies]},
        "wer_20_sentences_mulaw": round(wer, 4), "exact_sentences": f"{exact}/20",
        "load_and_warm_up_s": round(load_s, 2),
        "rss_mb": {"after_load": round(rss_loaded), "after_run": round(rss_now), "peak": round(rss_peak)},
        "install_size_local_requirements_mb": round(install_size_mb(), 1),
    }, indent=2))
    engine.close()


if __name__ == "__main__":
    main()

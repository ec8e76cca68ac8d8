"""CPU cost of the call core alone (no sockets, no event loop): process CPU per call-second of simulated calls.

Drives `CallStateMachine` through whole calls in simulated time: a caller frame every 20 ms, answers the model
produces in a burst (20 ms deltas) and the core paces out, Twilio echoing each mark when its audio has played,
a barge-in in every other answer. Reports process CPU microseconds per call-second, best of `--repeats` (the
machine is shared; the best run is the least disturbed one). The simulation's own bookkeeping is included and
is the same for any version of the core: compare two versions by the difference.

    .venv/bin/python bench/call_core_cost.py [--calls 100] [--seconds 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import heapq
import time

from switchboard.bridge.call.actions import ClearCallerPlayback, PlayToCaller, SendPlaybackMark
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudio,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    DeadlineReached,
    ModelAudio,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    PlaybackMarked,
    StreamStarted,
)
from switchboard.bridge.call.state_machine import CallSettings, CallStateMachine

FRAME = base64.b64encode(b"\xff" * 160).decode()
DELTA = base64.b64encode(b"\x10" * 160).decode()
ANSWER_MS = 4000


def simulate(calls: int, seconds: float) -> float:
    """Process CPU seconds for `calls` simulated calls of `seconds` each."""
    settings = CallSettings(playback_lead_ms=300.0, mark_interval_ms=100.0, inactivity_prompt_s=1e9,
                            inactivity_hangup_s=1e9, max_call_s=1e9, wrap_up_s=0.0, model_session_max_s=1e9)
    started = time.process_time()
    for index in range(calls):
        call = CallStateMachine(settings, call_sid=f"CA{index}")
        twilio_queued_s = 0.0  # when everything sent so far will have played
        events: list[tuple[float, int, object]] = []  # (time, tie-break, event)
        counter = 0

        def at(t: float, event: object) -> None:
            nonlocal counter
            counter += 1
            heapq.heappush(events, (t, counter, event))

        def perform(actions: list[object], now: float) -> None:
            nonlocal twilio_queued_s
            for action in actions:
                if type(action) is PlayToCaller:
                    twilio_queued_s = max(twilio_queued_s, now) + 0.02
                elif type(action) is SendPlaybackMark:
                    at(max(twilio_queued_s, now), PlaybackMarked(name=action.name))
                elif type(action) is ClearCallerPlayback:
                    twilio_queued_s = now

        perform(call.handle(StreamStarted(stream_sid="MZ1", call_sid=f"CA{index}"), now=0.0), 0.0)
        perform(call.handle(ModelSessionOpened(), now=0.0), 0.0)
        for frame in range(int(seconds * 50)):
            at(frame * 0.02, CallerAudio(FRAME))
        response = 0
        t = 0.2
        while t < seconds:
            response += 1
            at(t, ("answer", response))
            t += ANSWER_MS / 1000 * (0.5 if response % 2 else 1.0) + 1.5
        next_deadline: float | None = None
        while events:
            now, _, event = heapq.heappop(events)
            if next_deadline is not None and next_deadline <= now:
                heapq.heappush(events, (now, 0, event))
                now, event = next_deadline, DeadlineReached()
            if isinstance(event, tuple):
                response_id, item_id = f"resp_{event[1]}", f"item_{event[1]}"
                batch = [ModelResponseStarted(response_id=response_id)]
                batch += [ModelAudio(response_id=response_id, item_id=item_id, payload=DELTA)
                          for _ in range(ANSWER_MS // 20)]
                batch += [AssistantTranscriptDone(response_id, item_id, "w " * 48),
                          ModelResponseDone(response_id, "completed")]
                if event[1] % 2:
                    at(now + ANSWER_MS / 2000, CallerStartedSpeaking())
                    at(now + ANSWER_MS / 2000 + 0.5, CallerStoppedSpeaking())
            else:
                batch = [event]
            for item in batch:
                perform(call.handle(item, now=now), now)  # type: ignore[arg-type]
            next_deadline = call.next_deadline()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    best = min(simulate(args.calls, args.seconds) for _ in range(args.repeats))
    print(f"call core: {1e6 * best / (args.calls * args.seconds):.1f} us CPU per call-second "
          f"(best of {args.repeats}, {args.calls} calls x {args.seconds:g} s simulated)")


if __name__ == "__main__":
    main()

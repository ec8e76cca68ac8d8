"""The engine and the keypad: a key's tone in the audio is not speech (real synthesised DTMF tones through the
real VAD), typed digits reach the brain, and semantic_vad's eagerness sets how long a pause ends a turn."""

from __future__ import annotations

import base64
from typing import Any

from switchboard.audio.dtmf import KEY_FREQUENCIES_HZ, dtmf_tone_mulaw, is_dtmf_frame
from switchboard.engine import g711
from switchboard.engine.app import Engine
from switchboard.engine.brain import AgentSaid, BrainInput, CallerSaid, CallTool, Say, ToolSpec, decide
from switchboard.engine.session import RealtimeSession, Send
from switchboard.engine.vad import SpeechStarted, SpeechStopped, TurnDetector, WebRtcFrameClassifier

SILENCE_MS = b"\xff" * 8
LOOKUP = ToolSpec("lookup_order", "Look up an order by its number.",
                  {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]})


def _keys_audio(keys: str, tone_ms: int = 100, gap_ms: int = 150) -> bytes:
    return b"".join(dtmf_tone_mulaw(key, tone_ms) + SILENCE_MS * gap_ms for key in keys)


def test_every_key_tone_is_recognised_and_speech_is_not(engine: Engine) -> None:
    for key in KEY_FREQUENCIES_HZ:
        tone = dtmf_tone_mulaw(key, 100)
        assert all(is_dtmf_frame(g711.mulaw_to_pcm16(tone[i:i + 160])) for i in range(0, len(tone), 160)), key
    speech = engine.synthesizer.synthesize_mulaw("My order number is four five one two, and my name is Sam.")
    frames = [speech[i:i + 160] for i in range(0, len(speech) - 159, 160)]
    assert not any(is_dtmf_frame(g711.mulaw_to_pcm16(frame)) for frame in frames)


def test_key_tones_start_no_turn_but_speech_after_them_does(engine: Engine) -> None:
    # Without the tone test, webrtcvad calls a DTMF tone speech in every frame.
    detector = TurnDetector(WebRtcFrameClassifier(threshold=0.9), prefix_padding_ms=300, silence_duration_ms=500)
    assert detector.push(_keys_audio("4512#*0") + SILENCE_MS * 1000) == []
    long_press = dtmf_tone_mulaw("5", 600)  # a key held down
    assert detector.push(long_press + SILENCE_MS * 1000) == []
    speech = engine.synthesizer.synthesize_mulaw("Can you check my order please?")
    events = detector.push(speech + SILENCE_MS * 1000)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_a_realtime_session_hears_no_speech_in_key_tones() -> None:
    session = RealtimeSession(classifier_factory=lambda threshold: WebRtcFrameClassifier(threshold))
    session.handle({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad", "threshold": 0.9}}}}})
    audio = _keys_audio("4512#") + SILENCE_MS * 800
    outputs: list[Any] = []
    for offset in range(0, len(audio), 160):  # 20 ms appends, as Twilio sends them
        outputs += session.handle({"type": "input_audio_buffer.append",
                                   "audio": base64.b64encode(audio[offset:offset + 160]).decode()})
    assert [o.event["type"] for o in outputs if isinstance(o, Send)] == []


def test_semantic_vad_eagerness_sets_the_pause_that_ends_a_turn() -> None:
    def loud(frame: bytes) -> bool:
        return frame[0] != 0xFF

    def turn_end_ms(eagerness: str) -> int:
        session = RealtimeSession(classifier_factory=lambda threshold: loud)
        session.handle({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "format": {"type": "audio/pcmu"}, "turn_detection": {"type": "semantic_vad", "eagerness": eagerness}}}}})
        outputs = session.handle({"type": "input_audio_buffer.append", "audio": base64.b64encode(
            b"\x00" * 8 * 400 + SILENCE_MS * 3000).decode()})
        stopped = [o.event for o in outputs if isinstance(o, Send)
                   and o.event["type"] == "input_audio_buffer.speech_stopped"]
        return int(stopped[0]["audio_end_ms"])

    assert turn_end_ms("high") < turn_end_ms("auto") < turn_end_ms("low")
    assert turn_end_ms("low") - 400 >= 1500


def test_typed_digits_answer_the_agents_question() -> None:
    turns = (CallerSaid("Can you check my order?"), AgentSaid("Sure. What is your order number?"),
             CallerSaid("(typed on the phone keypad) 4512"))
    assert decide(BrainInput(tools=(LOOKUP,), turns=turns)) == CallTool("lookup_order", {"order_number": "4512"})


def test_typed_digits_alone_fill_the_tool_that_takes_a_number_or_are_read_back() -> None:
    typed = (CallerSaid("(typed on the phone keypad) 4512"),)
    assert decide(BrainInput(tools=(LOOKUP,), turns=typed)) == CallTool("lookup_order", {"order_number": "4512"})
    answer = decide(BrainInput(tools=(), turns=typed))
    assert isinstance(answer, Say) and "4 5 1 2" in answer.text


def test_server_vad_idle_timeout_prompts_after_the_answer_has_played(
        validate_server_event: Any) -> None:
    def loud(frame: bytes) -> bool:
        return frame[0] != 0xFF

    session = RealtimeSession(classifier_factory=lambda threshold: loud)
    session.handle({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcmu"},
        "turn_detection": {"type": "server_vad", "threshold": 0.9, "idle_timeout_ms": 5000}}}}})
    [created] = [o.event for o in session.handle({"type": "response.create"}) if isinstance(o, Send)
                 and o.event["type"] == "response.created"]
    session.response_finish(created["response"]["id"])  # no audio: the timeout counts from now

    def append_silence(ms: int) -> list[dict[str, Any]]:
        return [o.event for o in session.handle({"type": "input_audio_buffer.append",
                                                  "audio": base64.b64encode(SILENCE_MS * ms).decode()})
                if isinstance(o, Send)]

    assert append_silence(4900) == []
    events = append_silence(200)
    assert [e["type"] for e in events][:2] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed"]
    assert "response.created" in [e["type"] for e in events]
    triggered = events[0]
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 5000
    for event in events:
        validate_server_event(event)
    # The prompt is under way: no second one until its answer has played and the timeout passes again.
    assert append_silence(100) == []


def test_a_transfer_carries_a_summary_of_what_the_caller_asked() -> None:
    transfer = ToolSpec("transfer_to_human", "Transfer the call to a human colleague.", {
        "type": "object", "properties": {"reason": {"type": "string"}, "summary": {"type": "string"}},
        "required": ["reason", "summary"]})
    turns = (CallerSaid("Can you check my order?"), AgentSaid("Sure. What is your order number?"),
             CallerSaid("(typed on the phone keypad) 4512"), AgentSaid("Order 4512 shipped."),
             CallerSaid("Can I speak to a person please?"))
    decision = decide(BrainInput(tools=(transfer,), turns=turns))
    assert isinstance(decision, CallTool) and decision.name == "transfer_to_human"
    assert decision.arguments["reason"] == "Can I speak to a person please?"
    assert decision.arguments["summary"] == ("The caller said: Can you check my order? / (typed on the phone keypad) "
                                             "4512 / Can I speak to a person please?")

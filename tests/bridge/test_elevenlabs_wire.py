"""ElevenLabs multi-context TTS wire format: golden messages from protocols.md §3.1-§3.2, both ways."""

from __future__ import annotations

import json

import pytest

from switchboard.bridge.wire.elevenlabs_tts import (
    TtsAlignment,
    TtsAudio,
    TtsContextFinal,
    TtsError,
    TtsProtocolError,
    encode_close_context,
    encode_close_socket,
    encode_flush,
    encode_init_context,
    encode_keep_alive,
    encode_text,
    parse_tts_message,
    take_complete_words,
    tts_url,
)

AUDIO = "//79/fz7+vn4"  # 9 μ-law bytes, base64


def test_url_for_the_public_api() -> None:
    assert tts_url("https://api.elevenlabs.io", "21m00Tcm4TlvDq8ikWAM", "eleven_flash_v2_5") == (
        "wss://api.elevenlabs.io/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/multi-stream-input"
        "?model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180&sync_alignment=true"
    )


def test_url_for_a_local_fake_and_a_regional_host_with_a_trailing_slash() -> None:
    assert tts_url("http://127.0.0.1:8099", "v", "m").startswith(
        "ws://127.0.0.1:8099/v1/text-to-speech/v/multi-stream-input?model_id=m&")
    assert tts_url("https://api.eu.residency.elevenlabs.io/", "v", "m").startswith(
        "wss://api.eu.residency.elevenlabs.io/v1/text-to-speech/v/multi-stream-input?")


def test_url_escapes_the_voice_id_and_refuses_other_schemes() -> None:
    assert "/text-to-speech/a%2Fb%3Fc/multi-stream-input" in tts_url("https://x", "a/b?c", "m")
    with pytest.raises(ValueError):
        tts_url("ftp://api.elevenlabs.io", "v", "m")


def test_init_context_is_a_space_with_settings_and_the_chunk_schedule() -> None:
    assert json.loads(encode_init_context("c1")) == {
        "text": " ",
        "context_id": "c1",
        "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0,
                           "use_speaker_boost": True, "speed": 1.0},
        "generation_config": {"chunk_length_schedule": [120, 160, 250, 290]},
    }
    assert json.loads(encode_init_context("c2", speed=1.15))["voice_settings"]["speed"] == 1.15
    with pytest.raises(ValueError):
        encode_init_context("c3", speed=1.5)


def test_text_ends_with_exactly_one_space() -> None:
    assert json.loads(encode_text("c1", "Hello there.")) == {"text": "Hello there. ", "context_id": "c1"}
    assert json.loads(encode_text("c1", "Hello there.   ")) == {"text": "Hello there. ", "context_id": "c1"}
    assert json.loads(encode_text("c1", "line\n"))["text"] == "line\n "
    for nothing in ("", " ", "\n"):
        with pytest.raises(ValueError):
            encode_text("c1", nothing)


def test_control_messages() -> None:
    assert json.loads(encode_flush("c1")) == {"context_id": "c1", "flush": True}
    assert json.loads(encode_close_context("c1")) == {"context_id": "c1", "close_context": True}
    assert json.loads(encode_keep_alive("c1")) == {"text": "", "context_id": "c1"}
    assert json.loads(encode_close_socket()) == {"close_socket": True}


def test_streamed_text_is_cut_at_whole_words() -> None:
    assert take_complete_words("Hel") == ("", "Hel")
    assert take_complete_words("Hello th") == ("Hello", "th")
    assert take_complete_words("Hello there, how ") == ("Hello there, how", "")
    assert take_complete_words("First line.\nSec") == ("First line.", "Sec")
    assert take_complete_words("   ") == ("", "")
    pending, spoken = "", []
    for delta in ["Hel", "lo", " the", "re,", " how are", " you?"]:
        ready, pending = take_complete_words(pending + delta)
        if ready:
            spoken.append(json.loads(encode_text("c1", ready))["text"])
    spoken.append(json.loads(encode_text("c1", pending))["text"])
    assert "".join(spoken) == "Hello there, how are you? "


def test_audio_with_alignment() -> None:
    message = {
        "audio": AUDIO,
        "normalizedAlignment": {"chars": ["h", "i"], "charStartTimesMs": [0, 3], "charDurationsMs": [3, 5]},
        "alignment": {"chars": ["H", "i"], "charStartTimesMs": [0, 67], "charDurationsMs": [67, 67]},
        "contextId": "c1",
    }
    assert parse_tts_message(json.dumps(message)) == TtsAudio(
        context_id="c1", payload=AUDIO,
        alignment=TtsAlignment(chars=("H", "i"), start_ms=(0, 67), duration_ms=(67, 67)),
    )


def test_alignment_falls_back_to_the_normalized_one_and_may_be_absent() -> None:
    normalized = {"chars": ["a"], "charStartTimesMs": [12.4], "charDurationsMs": [30.6]}
    parsed = parse_tts_message(json.dumps({"audio": AUDIO, "normalizedAlignment": normalized,
                                           "alignment": None, "contextId": "c1"}))
    assert parsed == TtsAudio("c1", AUDIO, TtsAlignment(("a",), (12,), (31,)))
    assert parse_tts_message(json.dumps({"audio": AUDIO, "contextId": "c1"})) == TtsAudio("c1", AUDIO, None)


def test_final_error_and_empty_audio() -> None:
    assert parse_tts_message(b'{"isFinal": true, "contextId": "c1"}') == TtsContextFinal("c1")
    assert parse_tts_message('{"audio": null, "isFinal": true, "contextId": "c1"}') == TtsContextFinal("c1")
    assert parse_tts_message('{"audio": null, "isFinal": false, "contextId": "c1"}') is None
    assert parse_tts_message('{"audio": "", "contextId": "c1"}') is None
    assert parse_tts_message(json.dumps({
        "message": "Maximum simultaneous contexts per WebSocket connection exceeded (5).",
        "error": "max_active_conversations", "code": 1008,
    })) == TtsError("Maximum simultaneous contexts per WebSocket connection exceeded (5).")
    assert parse_tts_message('{"error": "quota_exceeded"}') == TtsError("quota_exceeded")


def test_snake_case_context_id_in_a_response_is_accepted() -> None:
    assert parse_tts_message('{"isFinal": true, "context_id": "c9"}') == TtsContextFinal("c9")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("not json", "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('{"audio": "abc", "contextId": "c1"}', "bad_base64"),
        ('{"audio": "ab$=", "contextId": "c1"}', "bad_base64"),
        ('{"audio": 12, "contextId": "c1"}', "bad_base64"),
        (json.dumps({"audio": AUDIO}), "missing_context_id"),
        ('{"isFinal": true}', "missing_context_id"),
        (json.dumps({"audio": AUDIO, "contextId": "c1", "alignment": {"chars": ["a"], "charStartTimesMs": [0]}}),
         "bad_alignment"),
        (json.dumps({"audio": AUDIO, "contextId": "c1",
                     "alignment": {"chars": ["a", "b"], "charStartTimesMs": [0], "charDurationsMs": [1]}}),
         "bad_alignment"),
        (json.dumps({"audio": AUDIO, "contextId": "c1",
                     "alignment": {"chars": ["a"], "charStartTimesMs": [-1], "charDurationsMs": [1]}}),
         "bad_alignment"),
        (json.dumps({"audio": AUDIO, "contextId": "c1", "alignment": "none"}), "bad_alignment"),
    ],
)
def test_malformed_frames_raise_a_labelled_protocol_error(raw: str, kind: str) -> None:
    with pytest.raises(TtsProtocolError) as raised:
        parse_tts_message(raw)
    assert raised.value.kind == kind

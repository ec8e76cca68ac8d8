"""CallSettings: everything the call core needs to know about one call, fixed at its start. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CallSettings:
    """Everything the core needs to know about one call, fixed at its start."""

    instructions: str = ""
    greeting: str = ""
    voice: str = "marin"
    speed: float = 1.0
    tools: tuple[dict[str, Any], ...] = ()
    output_modalities: tuple[str, ...] = ("audio",)
    transcription_model: str | None = None
    # The model writes text and an external TTS (ElevenLabs) speaks it; False speaks with the model's voice.
    external_tts: bool = False
    # Transcribe each caller turn for the record from the model's copy of its audio (cartesia/elevenlabs).
    transcribe_caller_audio: bool = False
    # Twilio's unplayed buffer is kept at most this far ahead of real time, so a `clear` discards little.
    playback_lead_ms: float = 300.0
    # A mark at most every this many ms of audio (0: after every media), and always after a response's last.
    mark_interval_ms: float = 0.0
    # Caller audio held while the model session is not up yet (never dropped below this bound).
    max_buffered_caller_ms: float = 10_000.0
    inactivity_prompt_s: float = 30.0
    inactivity_hangup_s: float = 30.0
    max_call_s: float = 1800.0
    wrap_up_s: float = 60.0
    thinking_delay_s: float = 0.5
    thinking_interval_s: float = 3.0
    tool_timeout_s: float = 15.0
    thinking_sound: tuple[str, ...] = ()  # base64 μ-law chunks
    # On a dropped model socket: reconnect and replay (the runner retries; see ModelReconnectFailed).
    reconnect_model: bool = True
    # The provider ends a session after 60 minutes: recycle it before, between responses.
    model_session_max_s: float = 3300.0
    # System lines carry a quoted sentence: a real model paraphrases it, the local engine speaks it.
    still_there_prompt: str = 'The caller has been silent for a while. Ask briefly: "Are you still there?"'
    inactivity_goodbye: str = (
        'The caller is still silent. Say a short, polite goodbye, for example: "I haven\'t heard from you, so '
        'I\'ll end the call now. Thanks for calling, goodbye!"'
    )
    wrap_up_prompt: str = (
        "The call is about to reach its time limit. Politely wrap up now: summarise what was done, and if the "
        "caller's need is still open, offer a callback ticket. For example: \"We're almost out of time on this "
        "call. If there's anything still open, I can have a colleague call you back.\""
    )
    end_call_goodbye: str = 'Say a brief, friendly goodbye, for example: "Thanks for calling, goodbye!"'
    model_lost_apology: str = (
        "I'm sorry, we're having technical trouble on this line."
    )
    resume_after_reconnect: str = (
        'The line dropped for a moment. Briefly apologise and continue where you left off, for example: '
        '"Sorry about that, the line cut out for a moment."'
    )
    shutdown_goodbye: str = (
        'We must end the call now. Apologise briefly and say goodbye, for example: "I\'m sorry, I have to end '
        'our call now. Please call back anytime. Goodbye!"'
    )
    transfer_number: str | None = None
    transfer_caller_id: str | None = None
    # Keypad (bridge/call/keypad.py): the pause that ends a run of digits, and the tenant's shortcuts.
    dtmf_pause_s: float = 2.0
    keypad: tuple[tuple[str, str], ...] = ()
    # After a key, caller audio events are taken for its tone (Twilio plays it into the inbound audio).
    keypad_tone_guard_s: float = 1.0
    keypad_transfer_line: str = "Transferring you to a colleague now, please hold."
    # The tenant's `turn_detection`, sent as given (None: server VAD, threshold 0.9).
    turn_detection: dict[str, Any] | None = None
    transfer_line: str = (
        'Tell the caller in one short sentence that you are transferring them now, for example: "I\'m '
        'transferring you to a colleague now, please hold."'
    )
    transfer_failed_line: str = (
        "The transfer to a colleague failed. Apologise briefly and offer a callback ticket, for example: "
        "\"Sorry, I couldn't reach a colleague just now. I can have someone call you back instead.\""
    )

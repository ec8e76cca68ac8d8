"""OpenAI Realtime GA events <-> call events and actions. Pure: no I/O.

Server event names are the GA ones (`response.output_audio.delta`, ...; protocols.md §1.6).
Audio stays base64 both ways: the caller's Twilio payload is appended as is, and an audio
delta's base64 goes to Twilio as is.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard.bridge.call.actions import (
    AddConversationItem,
    AppendCallerAudio,
    CallAction,
    CancelModelResponse,
    ConfigureModelSession,
    DeleteModelItem,
    DiscardCallerInput,
    RequestModelResponse,
    RetrieveCallerAudio,
    SendToolResult,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudioRetrieved,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CallerTranscribed,
    CallerTurnCommitted,
    CallEvent,
    ModelAudio,
    ModelErrored,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionConfigured,
    ModelSessionOpened,
    ModelTextDelta,
    ToolCallRequested,
)

REQUEST_ID_METADATA_KEY = "switchboard_request_id"

# Turn detection exactly as contract §5: server VAD, threshold 0.9 (phone lines are noisy).
TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.9,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


class RealtimeProtocolError(ValueError):
    """The model sent a frame we cannot parse. `kind` is a fixed label for counting."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def parse_realtime_event(message: str | bytes) -> CallEvent | None:
    """Translate one server event; None for events the call does not act on.

    Raises:
        RealtimeProtocolError: the frame is not a JSON object with a `type`, or lacks required fields.
    """
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise RealtimeProtocolError("malformed_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise RealtimeProtocolError("no_type")
    kind: str = data["type"]
    try:
        if kind == "response.output_audio.delta":
            return ModelAudio(response_id=_str(data["response_id"]), item_id=_str(data["item_id"]),
                              payload=_str(data["delta"]))
        if kind == "input_audio_buffer.speech_started":
            return CallerStartedSpeaking(item_id=data.get("item_id"), audio_start_ms=data.get("audio_start_ms"))
        if kind == "input_audio_buffer.speech_stopped":
            return CallerStoppedSpeaking(item_id=data.get("item_id"))
        if kind == "input_audio_buffer.committed":
            return CallerTurnCommitted(item_id=data["item_id"], previous_item_id=data.get("previous_item_id"))
        if kind == "response.created":
            response = data["response"]
            metadata = response.get("metadata") or {}
            return ModelResponseStarted(
                response_id=response["id"], request_id=metadata.get(REQUEST_ID_METADATA_KEY)
            )
        if kind == "response.done":
            response = data["response"]
            return ModelResponseDone(
                response_id=response["id"], status=response.get("status") or "completed", usage=response.get("usage")
            )
        if kind == "response.output_audio_transcript.done":
            return AssistantTranscriptDone(
                response_id=data["response_id"], item_id=data["item_id"], transcript=_str(data.get("transcript") or "")
            )
        if kind == "response.output_text.delta":
            return ModelTextDelta(response_id=_str(data["response_id"]), item_id=_str(data["item_id"]),
                                  delta=_str(data.get("delta") or ""))
        if kind == "conversation.item.retrieved":
            item = data["item"]
            audio = ""
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_audio" and part.get("audio"):
                    audio = _str(part["audio"])
            return CallerAudioRetrieved(item_id=_str(item["id"]), audio=audio)
        if kind == "response.output_text.done":
            return AssistantTranscriptDone(
                response_id=data["response_id"], item_id=data["item_id"], transcript=_str(data.get("text") or "")
            )
        if kind == "response.function_call_arguments.done":
            return ToolCallRequested(
                response_id=_str(data["response_id"]), call_id=_str(data["call_id"]), name=_str(data.get("name") or ""),
                arguments=_str(data.get("arguments") or "{}"),
            )
        if kind == "conversation.item.input_audio_transcription.completed":
            return CallerTranscribed(item_id=_str(data["item_id"]), transcript=_str(data.get("transcript") or ""))
        if kind == "error":
            error = data.get("error") or {}
            return ModelErrored(
                code=error.get("code"), message=str(error.get("message") or ""), error_type=error.get("type"),
                request_id=error.get("event_id"),
            )
        if kind == "session.created":
            return ModelSessionOpened()
        if kind == "session.updated":
            return ModelSessionConfigured()
    except (KeyError, TypeError, AttributeError):
        raise RealtimeProtocolError(f"missing_fields:{kind}") from None
    return None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def turn_detection(tenant_value: dict[str, Any] | None) -> dict[str, Any]:
    """The tenant's `turn_detection` as given (validated at load), or the default server VAD 0.9."""
    return dict(tenant_value) if tenant_value else dict(TURN_DETECTION)


def session_update(action: ConfigureModelSession) -> dict[str, Any]:
    """The GA `session.update` for a phone call: μ-law both ways, server VAD 0.9, near-field."""
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcmu"},
        "noise_reduction": {"type": "near_field"},
        "turn_detection": turn_detection(action.turn_detection),
    }
    if action.transcription_model:
        audio_input["transcription"] = {"model": action.transcription_model}
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": action.instructions,
        "output_modalities": list(action.output_modalities),
        "audio": {
            "input": audio_input,
            "output": {"format": {"type": "audio/pcmu"}, "voice": action.voice, "speed": action.speed},
        },
    }
    if action.tools:
        session["tools"] = [dict(tool) for tool in action.tools]
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def encode_append(payload: str) -> str:
    """`input_audio_buffer.append` for a Twilio payload. The payload passed the base64 check in
    `parse_twilio_message`, so it needs no JSON escaping: plain concatenation is the cheapest encoder."""
    return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'


def encode_realtime_action(action: CallAction) -> str | None:
    """The client event for an action aimed at the model, as JSON text; None if it is not for the model."""
    if isinstance(action, AppendCallerAudio):
        return encode_append(action.payload)
    event: dict[str, Any]
    if isinstance(action, RequestModelResponse):
        response: dict[str, Any] = {"metadata": {REQUEST_ID_METADATA_KEY: action.request_id}}
        if action.instructions:
            response["instructions"] = action.instructions
        event = {"type": "response.create", "event_id": action.request_id, "response": response}
    elif isinstance(action, CancelModelResponse):
        event = {"type": "response.cancel"}
        if action.response_id:
            event["response_id"] = action.response_id
    elif isinstance(action, TruncateModelAudio):
        event = {
            "type": "conversation.item.truncate", "item_id": action.item_id, "content_index": 0,
            "audio_end_ms": action.audio_end_ms,
        }
    elif isinstance(action, DiscardCallerInput):
        event = {"type": "input_audio_buffer.clear"}
    elif isinstance(action, DeleteModelItem):
        event = {"type": "conversation.item.delete", "item_id": action.item_id}
    elif isinstance(action, SendToolResult):
        event = {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": action.call_id, "output": action.output},
        }
    elif isinstance(action, RetrieveCallerAudio):
        event = {"type": "conversation.item.retrieve", "item_id": action.item_id}
    elif isinstance(action, AddConversationItem):
        event = {"type": "conversation.item.create", "item": action.item}
    elif isinstance(action, ConfigureModelSession):
        event = session_update(action)
    else:
        return None
    return orjson.dumps(event).decode()

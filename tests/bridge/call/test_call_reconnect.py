"""A dropped model socket: reconnect, replay the conversation, keep the caller company, or hand over."""

from __future__ import annotations

from callkit import answered_call, mulaw_b64, of_type

from switchboard.bridge.call.actions import (
    AddConversationItem,
    AppendCallerAudio,
    ConfigureModelSession,
    EndCall,
    PlayToCaller,
    ReconnectModel,
    RequestModelResponse,
    TransferCall,
)
from switchboard.bridge.call.events import (
    AssistantTranscriptDone,
    CallerAudio,
    CallerTranscribed,
    CallerTurnCommitted,
    DeadlineReached,
    ModelDisconnected,
    ModelReconnectFailed,
    ModelResponseDone,
    ModelResponseStarted,
    ModelSessionOpened,
    ToolCallFinished,
    ToolCallRequested,
    TransferFinished,
)

POP = mulaw_b64(100, fill=0x10)


def test_drop_reconnects_keeps_caller_audio_and_replays_the_conversation_in_order() -> None:
    call = answered_call(thinking_sound=(POP,), thinking_delay_s=0.5, greeting="Hello there.")
    call.handle(CallerTurnCommitted(item_id="user_1"), now=1.0)
    call.handle(CallerTranscribed(item_id="user_1", transcript="Where is my order?"), now=1.1)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.2)
    call.handle(ToolCallRequested(response_id="resp_1", call_id="call_1", name="lookup_order",
                                  arguments='{"order_number": "7"}'), now=1.3)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.4)
    call.handle(ToolCallFinished(call_id="call_1", output='{"status": "shipped"}'), now=1.5)
    call.handle(ModelResponseStarted(response_id="resp_2"), now=1.6)
    call.handle(AssistantTranscriptDone(response_id="resp_2", item_id="item_2", transcript="It shipped."), now=1.7)

    assert call.handle(ModelDisconnected(reason="1006"), now=2.0) == [ReconnectModel()]
    # While the model is away the caller's audio is held, and the thinking sound keeps them company.
    assert call.handle(CallerAudio(mulaw_b64(20, fill=0x33)), now=2.1) == []
    assert call.next_deadline() == 2.5
    assert PlayToCaller(POP) in call.handle(DeadlineReached(), now=2.5)

    actions = call.handle(ModelSessionOpened(), now=3.0)
    assert isinstance(actions[0], ConfigureModelSession)
    replayed = [a.item for a in of_type(actions, AddConversationItem)]
    assert [(i["type"], i.get("role")) for i in replayed] == [
        ("message", "user"), ("function_call", None), ("function_call_output", None), ("message", "assistant")]
    assert replayed[0]["content"][0]["text"] == "Where is my order?"
    assert replayed[3]["content"][0]["text"] == "It shipped."
    # The answer that was cut by the drop is resumed; no second greeting.
    [resume] = of_type(actions, RequestModelResponse)
    assert "line dropped" in (resume.instructions or "") and "Hello there." not in (resume.instructions or "")
    assert of_type(actions, AppendCallerAudio) == [AppendCallerAudio(mulaw_b64(20, fill=0x33))]
    assert actions.index(replayed and of_type(actions, AddConversationItem)[-1]) < actions.index(resume)


def test_no_model_and_no_transfer_number_apologises_leaves_a_callback_and_ends() -> None:
    call = answered_call(transfer_number=None)
    call.handle(ModelDisconnected(reason="1006"), now=2.0)
    [transfer] = of_type(call.handle(ModelReconnectFailed(fatal=False), now=7.0), TransferCall)
    assert transfer.number is None and "technical trouble" in (transfer.apology or "")
    assert call.handle(TransferFinished(ok=True), now=7.5) == [EndCall("model_unavailable")]


def test_a_fatal_refusal_hands_over_to_a_human_with_the_apology() -> None:
    call = answered_call(transfer_number="+15559990000", transfer_caller_id="+15557654321")
    [transfer] = of_type(call.handle(ModelReconnectFailed(fatal=True), now=1.0), TransferCall)
    assert transfer.number == "+15559990000" and transfer.caller_id == "+15557654321"
    assert "transfer you" in (transfer.apology or "")
    assert call.handle(TransferFinished(ok=True), now=1.5) == [EndCall("transferred")]


def test_the_model_session_is_recycled_between_responses_before_the_provider_limit() -> None:
    call = answered_call(model_session_max_s=3300.0, inactivity_prompt_s=1e6)
    assert call.next_deadline() == 3300.0
    call.handle(ModelResponseStarted(response_id="resp_1"), now=3299.0)
    # A response is running at the limit: wait, then recycle once it is done.
    assert of_type(call.handle(DeadlineReached(), now=3300.0), ReconnectModel) == []
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=3300.5)
    assert call.next_deadline() == 3301.0
    assert call.handle(DeadlineReached(), now=3301.0) == [ReconnectModel()]
    actions = call.handle(ModelSessionOpened(), now=3301.2)
    assert isinstance(actions[0], ConfigureModelSession)
    assert of_type(actions, RequestModelResponse) == []  # nothing was cut: no resume line

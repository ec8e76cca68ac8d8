"""Response sequencing (one response at a time, one request in flight) and model errors."""

from __future__ import annotations

import pytest
from callkit import answered_call, of_type

from switchboard.bridge.call.actions import EndCall, ReconnectModel, RecordUsage, RequestModelResponse
from switchboard.bridge.call.events import (
    CallerStartedSpeaking,
    DeadlineReached,
    ModelErrored,
    ModelResponseDone,
    ModelResponseStarted,
)
from switchboard.bridge.call.phases import CallPhase


def test_no_request_while_one_is_in_flight_or_a_response_is_active():
    # Wrap-up is due while the greeting request is still in flight.
    call = answered_call(greeting="Hello!", max_call_s=100.0, wrap_up_s=10.0)

    assert of_type(call.handle(DeadlineReached(), now=90.0), RequestModelResponse) == []
    started = call.handle(ModelResponseStarted(response_id="resp_1", request_id="sb_req_1"), now=90.5)
    assert of_type(started, RequestModelResponse) == []

    actions = call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=91.0)

    requests = of_type(actions, RequestModelResponse)
    assert len(requests) == 1
    assert requests[0].instructions == call.settings.wrap_up_prompt


def test_a_response_the_server_started_itself_also_holds_our_requests_back():
    call = answered_call(max_call_s=100.0, wrap_up_s=10.0)
    call.handle(ModelResponseStarted(response_id="resp_vad"), now=89.0)  # server VAD answered the caller

    assert of_type(call.handle(DeadlineReached(), now=90.0), RequestModelResponse) == []
    actions = call.handle(ModelResponseDone(response_id="resp_vad", status="completed"), now=92.0)
    assert [r.instructions for r in of_type(actions, RequestModelResponse)] == [call.settings.wrap_up_prompt]


def test_active_response_error_requeues_our_request_and_sends_it_after_the_next_response_done():
    call = answered_call(max_call_s=100.0, wrap_up_s=10.0)
    [wrap_up] = of_type(call.handle(DeadlineReached(), now=90.0), RequestModelResponse)
    # The server had just started a response of its own; ours is refused.
    call.handle(ModelResponseStarted(response_id="resp_vad"), now=90.01)
    refused = call.handle(
        ModelErrored(
            code="conversation_already_has_active_response",
            message="Conversation already has an active response in progress: resp_vad.",
            error_type="invalid_request_error", request_id=wrap_up.request_id,
        ),
        now=90.02,
    )
    assert refused == []

    assert call.handle(ModelResponseDone(response_id="resp_vad", status="completed"), now=93.0) == [wrap_up]
    assert call.phase is CallPhase.ACTIVE


def test_a_requeued_request_is_sent_only_once():
    call = answered_call(max_call_s=100.0, wrap_up_s=10.0)
    [wrap_up] = of_type(call.handle(DeadlineReached(), now=90.0), RequestModelResponse)
    call.handle(ModelResponseStarted(response_id="resp_vad"), now=90.01)
    call.handle(
        ModelErrored(code="conversation_already_has_active_response", message="busy", request_id=wrap_up.request_id),
        now=90.02,
    )
    call.handle(ModelResponseDone(response_id="resp_vad", status="completed"), now=93.0)
    call.handle(ModelResponseStarted(response_id="resp_2", request_id=wrap_up.request_id), now=93.1)

    actions = call.handle(ModelResponseDone(response_id="resp_2", status="completed"), now=95.0)

    assert of_type(actions, RequestModelResponse) == []


@pytest.mark.parametrize(
    "code", ["response_cancel_not_active", "conversation_already_has_active_response", "invalid_value", None]
)
def test_benign_and_unknown_errors_never_end_the_call(code):
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    call.handle(CallerStartedSpeaking(), now=1.5)

    actions = call.handle(
        ModelErrored(code=code, message="Cancellation failed: no active response found.",
                     error_type="invalid_request_error"),
        now=1.6,
    )

    assert of_type(actions, EndCall) == []
    assert call.phase is CallPhase.ACTIVE
    assert call.stats().model_errors == 1


def test_an_expired_session_is_replaced_by_a_new_one():
    call = answered_call()
    actions = call.handle(
        ModelErrored(code="session_expired", message="Your session hit the maximum duration of 60 minutes.",
                     error_type="invalid_request_error"),
        now=3600.0,
    )
    assert actions == [ReconnectModel()]
    assert call.phase is not CallPhase.ENDED


def test_response_usage_is_reported_and_totalled():
    call = answered_call()
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
             "output_token_details": {"text_tokens": 2, "audio_tokens": 8}}
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    assert RecordUsage(usage) in call.handle(ModelResponseDone(response_id="resp_1", status="completed", usage=usage),
                                             now=2.0)
    call.handle(ModelResponseStarted(response_id="resp_2"), now=3.0)
    call.handle(ModelResponseDone(response_id="resp_2", status="completed", usage=usage), now=4.0)

    assert call.stats().usage == {"total_tokens": 60, "input_tokens": 40, "output_tokens": 20,
                                  "output_token_details": {"text_tokens": 4, "audio_tokens": 16}}

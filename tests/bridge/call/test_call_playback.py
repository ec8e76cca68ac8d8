"""Model audio toward the caller: one media + one mark per delta, pacing, marks, barge-in."""

from __future__ import annotations

import pytest
from callkit import FAR, NO_PACING, answered_call, echo, mulaw_b64, of_type, payloads, speak

from switchboard.bridge.call.actions import (
    CancelModelResponse,
    ClearCallerPlayback,
    DeleteModelItem,
    PlayToCaller,
    SendPlaybackMark,
    TruncateModelAudio,
)
from switchboard.bridge.call.events import (
    CallerStartedSpeaking,
    DeadlineReached,
    ModelAudio,
    ModelResponseDone,
    ModelResponseStarted,
    PlaybackMarked,
)


def test_each_model_delta_becomes_one_media_with_the_same_payload_then_one_mark():
    call = answered_call(**NO_PACING)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    deltas = [mulaw_b64(100, fill=1), mulaw_b64(40, fill=2), mulaw_b64(260, fill=3)]

    actions = []
    for delta in deltas:
        actions += call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=delta), now=1.0)

    assert [type(a) for a in actions] == [PlayToCaller, SendPlaybackMark] * 3
    assert payloads(actions) == deltas
    marks = of_type(actions, SendPlaybackMark)
    assert [(m.item_id, m.audio_end_ms) for m in marks] == [("item_1", 100), ("item_1", 140), ("item_1", 400)]
    assert len({m.name for m in marks}) == 3
    assert call.stats().model_audio_ms == 400.0


def test_marks_count_audio_per_item():
    call = answered_call(**NO_PACING)
    _, first = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[200, 200], now=1.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.1)
    _, second = speak(call, response_id="resp_2", item_id="item_2", chunks_ms=[300], now=1.2)

    assert [m.audio_end_ms for m in first] == [200, 400]
    assert [(m.item_id, m.audio_end_ms) for m in second] == [("item_2", 300)]


def test_pacing_keeps_only_the_lead_unplayed_and_releases_the_rest_at_the_deadlines():
    call = answered_call(playback_lead_ms=300.0)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=10.0)
    deltas = [mulaw_b64(100, fill=i) for i in range(10)]

    released = []
    for delta in deltas:
        released += payloads(call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=delta), now=10.0))

    assert 3 <= len(released) <= 4
    assert released == deltas[: len(released)]
    # From here on one delta is due each time the unplayed lead would drop under 300 ms:
    # after k deltas (100 ms each, starting at 10.0) that is 10.0 + k * 0.1 - 0.3.
    while len(released) < 10:
        deadline = call.next_deadline()
        assert deadline == pytest.approx(10.0 + len(released) * 0.1 - 0.3)
        # Fired a hair late, as a real timer does (exactly-on-time firing: see test_found_bugs.py).
        actions = call.handle(DeadlineReached(), now=deadline + 0.001)
        assert len(of_type(actions, PlayToCaller)) == 1
        assert len(of_type(actions, SendPlaybackMark)) == 1
        released += payloads(actions)
    assert released == deltas
    assert call.next_deadline() == FAR  # queue empty: no pacing timer left
    assert call.has_unplayed_audio


def test_an_early_deadline_releases_nothing():
    call = answered_call(playback_lead_ms=300.0)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=10.0)
    deadline = call.next_deadline()
    assert deadline is not None and deadline > 10.05

    assert of_type(call.handle(DeadlineReached(), now=10.05), PlayToCaller) == []


def test_has_unplayed_audio_until_the_last_mark_is_echoed():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100, 100, 100], now=1.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.05)

    echo(call, marks[:2], now=1.2)
    assert call.has_unplayed_audio
    echo(call, marks[2:], now=1.3)
    assert not call.has_unplayed_audio


def test_is_model_speaking_follows_the_response():
    call = answered_call()
    assert not call.is_model_speaking
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    assert call.is_model_speaking
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=2.0)
    assert not call.is_model_speaking


def test_barge_in_clears_cancels_and_truncates_where_playback_is_the_last_echo_plus_the_time_since():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 20, now=10.0)
    assert marks[-1].audio_end_ms == 2000  # 2000 ms sent
    echo(call, marks[:6], now=10.6)  # played up to 600 ms at 10.6; Twilio plays on while audio is queued

    assert call.handle(CallerStartedSpeaking(item_id="item_u1", audio_start_ms=4200), now=10.73) == [
        ClearCallerPlayback(),
        CancelModelResponse(response_id="resp_1"),
        TruncateModelAudio(item_id="item_1", audio_end_ms=730),
    ]
    assert call.stats().barge_ins == 1
    assert not call.has_unplayed_audio


def test_a_later_echoed_mark_proves_the_earlier_ones_played():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=10.0)
    call.handle(PlaybackMarked(name=marks[6].name), now=10.7)  # Twilio plays in order

    actions = call.handle(CallerStartedSpeaking(), now=10.76)

    assert TruncateModelAudio(item_id="item_1", audio_end_ms=760) in actions


def test_barge_in_after_the_response_is_done_truncates_without_cancelling():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 20, now=10.0)
    call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=10.1)
    echo(call, marks[:6], now=10.6)

    assert call.handle(CallerStartedSpeaking(), now=10.71) == [
        ClearCallerPlayback(),
        TruncateModelAudio(item_id="item_1", audio_end_ms=710),
    ]


def test_barge_in_deletes_an_item_the_caller_never_heard():
    call = answered_call(**NO_PACING)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 5, now=10.0)

    # In the same tick the audio went out: Twilio has not played any of it.
    assert call.handle(CallerStartedSpeaking(), now=10.0) == [
        ClearCallerPlayback(),
        CancelModelResponse(response_id="resp_1"),
        DeleteModelItem(item_id="item_1"),
    ]


def test_barge_in_before_any_audio_only_cancels():
    call = answered_call()
    call.handle(ModelResponseStarted(response_id="resp_1"), now=10.0)

    assert call.handle(CallerStartedSpeaking(), now=10.1) == [
        ClearCallerPlayback(),
        CancelModelResponse(response_id="resp_1"),
    ]


def test_barge_in_with_nothing_playing_only_clears():
    call = answered_call()
    assert call.handle(CallerStartedSpeaking(), now=5.0) == [ClearCallerPlayback()]
    assert call.stats().barge_ins == 0


def test_truncation_never_exceeds_what_was_sent_when_playback_ran_dry():
    call = answered_call(playback_lead_ms=300.0)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=10.0)
    sent_ms = marks[-1].audio_end_ms
    assert sent_ms < 1000  # the rest is still queued here
    # The model stalls: nothing more is released, and Twilio plays all it has, then waits.
    call.handle(CallerStartedSpeaking(), now=10.0 + sent_ms / 1000 - 0.3)  # a cough: the rest is dropped
    _, marks = speak(call, response_id="resp_2", item_id="item_2", chunks_ms=[100, 100], now=20.0)
    echo(call, marks, now=20.2)

    actions = call.handle(CallerStartedSpeaking(), now=25.0)

    assert of_type(actions, TruncateModelAudio) == [TruncateModelAudio(item_id="item_2", audio_end_ms=200)]


def test_fully_heard_audio_of_a_still_active_response_is_truncated_at_its_full_length():
    call = answered_call(**NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 8, now=10.0)
    echo(call, marks, now=10.8)

    assert call.handle(CallerStartedSpeaking(), now=10.9) == [
        ClearCallerPlayback(),
        CancelModelResponse(response_id="resp_1"),
        TruncateModelAudio(item_id="item_1", audio_end_ms=800),
    ]


def test_queued_audio_is_dropped_at_barge_in_and_never_released():
    call = answered_call(playback_lead_ms=300.0)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 10, now=10.0)
    call.handle(CallerStartedSpeaking(), now=10.05)

    assert not call.has_unplayed_audio
    assert of_type(call.handle(DeadlineReached(), now=10.5), PlayToCaller) == []
    assert call.stats().model_audio_dropped_ms >= 600.0


def test_late_audio_of_the_cancelled_response_is_dropped():
    call = answered_call(**NO_PACING)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 3, now=10.0)
    call.handle(CallerStartedSpeaking(), now=10.1)

    late = call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=mulaw_b64(100)), now=10.12)

    assert of_type(late, PlayToCaller) == []
    assert of_type(late, SendPlaybackMark) == []
    assert call.stats().model_audio_dropped_ms == 100.0

    call.handle(ModelResponseDone(response_id="resp_1", status="cancelled"), now=10.2)
    fresh = mulaw_b64(100, fill=9)
    call.handle(ModelResponseStarted(response_id="resp_2"), now=11.0)
    actions = call.handle(ModelAudio(response_id="resp_2", item_id="item_2", payload=fresh), now=11.0)
    assert payloads(actions) == [fresh]


def test_marks_echoed_after_a_clear_do_not_count_as_heard():
    call = answered_call(**NO_PACING)
    _, old_marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100] * 20, now=10.0)
    echo(call, old_marks[:6], now=10.6)
    call.handle(CallerStartedSpeaking(), now=10.7)
    call.handle(ModelResponseDone(response_id="resp_1", status="cancelled"), now=10.75)
    _, new_marks = speak(call, response_id="resp_2", item_id="item_2", chunks_ms=[100] * 3, now=12.0)

    # Twilio answers the clear by echoing every mark that was pending, although none of it played.
    assert echo(call, old_marks[6:], now=12.01) == []

    assert call.has_unplayed_audio
    # Playback of item_2 began when it was sent (12.0): 50 ms, not the 2000 ms the stale marks would claim.
    assert call.handle(CallerStartedSpeaking(), now=12.05) == [
        ClearCallerPlayback(),
        CancelModelResponse(response_id="resp_2"),
        TruncateModelAudio(item_id="item_2", audio_end_ms=50),
    ]
    assert new_marks  # item_2 was sent, and not one of its marks came back


def test_unknown_mark_names_are_ignored():
    call = answered_call(**NO_PACING)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[100], now=1.0)
    assert call.handle(PlaybackMarked(name="not-ours"), now=1.05) == []
    assert call.has_unplayed_audio


def test_with_a_mark_interval_marks_go_out_every_interval_and_after_the_last_media_of_a_response():
    call = answered_call(mark_interval_ms=100.0, **NO_PACING)
    call.handle(ModelResponseStarted(response_id="resp_1"), now=1.0)
    kinds = []
    for i in range(7):  # seven 20 ms deltas
        actions = call.handle(ModelAudio(response_id="resp_1", item_id="item_1", payload=mulaw_b64(20, fill=i)),
                              now=1.0 + i * 0.02)
        kinds += [type(a).__name__ for a in actions]
    assert kinds == ["PlayToCaller"] * 4 + ["PlayToCaller", "SendPlaybackMark"] + ["PlayToCaller"] * 2
    assert call.has_unplayed_audio  # 40 ms sent and not yet covered by a mark
    done = call.handle(ModelResponseDone(response_id="resp_1", status="completed"), now=1.2)
    [mark] = [a for a in done if isinstance(a, SendPlaybackMark)]
    assert mark.item_id == "item_1" and mark.audio_end_ms == 140


def test_after_a_barge_in_the_next_answer_plays_at_once_not_after_the_cleared_audio():
    call = answered_call(playback_lead_ms=300.0)
    speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[2000], now=10.0)  # one long (TTS-sized) chunk
    call.handle(CallerStartedSpeaking(), now=10.5)
    call.handle(ModelResponseStarted(response_id="resp_2"), now=11.0)
    actions = call.handle(ModelAudio(response_id="resp_2", item_id="item_2", payload=mulaw_b64(100, fill=7)),
                          now=11.0)
    assert payloads(actions) == [mulaw_b64(100, fill=7)]


def test_bookkeeping_of_finished_responses_stays_bounded_on_a_long_call():
    from switchboard.bridge.call.recent import RecentMap, RecentSet

    ids: RecentSet[str] = RecentSet(3)
    for i in range(10):
        ids.add(f"resp_{i}")
    assert len(ids) == 3 and "resp_9" in ids and "resp_0" not in ids
    seqs: RecentMap[str, int] = RecentMap(2)
    seqs["a"], seqs["b"], seqs["c"] = 1, 2, 3
    assert list(seqs) == ["b", "c"]


def test_an_echo_late_beyond_the_recent_ones_does_not_pull_heard_back():
    call = answered_call(mark_interval_ms=100.0, **NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[20] * 150, now=10.0)
    for index, mark in enumerate(marks[:10]):  # echoed on time: mark k at 10.0 + (k + 1) * 0.1
        call.handle(PlaybackMarked(name=mark.name), now=10.0 + (index + 1) * 0.1)
    call.handle(PlaybackMarked(name=marks[10].name), now=11.18)  # due at 11.1, held up 80 ms on the way back

    actions = call.handle(CallerStartedSpeaking(), now=11.19)

    assert TruncateModelAudio(item_id="item_1", audio_end_ms=1190) in actions


def test_a_steady_echo_lag_is_kept_so_the_truncate_errs_on_the_side_of_less_heard():
    call = answered_call(mark_interval_ms=100.0, **NO_PACING)
    _, marks = speak(call, response_id="resp_1", item_id="item_1", chunks_ms=[20] * 150, now=10.0)
    for index, mark in enumerate(marks[:10]):  # every echo 50 ms after its audio would have played
        call.handle(PlaybackMarked(name=mark.name), now=10.05 + (index + 1) * 0.1)

    actions = call.handle(CallerStartedSpeaking(), now=11.08)

    assert TruncateModelAudio(item_id="item_1", audio_end_ms=1030) in actions

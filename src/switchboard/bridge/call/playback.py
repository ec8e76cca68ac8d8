"""PlaybackLedger: model audio sent to the caller vs. marks echoed, giving where Twilio's playback is now.

Pure: no I/O, no clock reads (every method that needs the time takes `now`, monotonic seconds).

How "heard" is worked out. Twilio plays the audio it was sent in order and without gaps while any is
queued, and echoes a mark once everything sent before it has played (protocols.md §2.4). So a mark echo is
an anchor: when it arrived, playback stood at the mark's position in the stream. From there the ledger
walks forward in time over the audio sent after it: playback runs continuously at real time, except that a
chunk can't start before it was sent (the buffer ran dry and Twilio waited). The result is never beyond
what was sent. A `clear` echoes every pending mark without the audio having played, so marks pending at a
`clear` are forgotten, and playback restarts from nothing at the next chunk.

An echo can arrive late for reasons that say nothing about playback (jitter on the way back, a busy
peer). Each mark knows when its audio would have finished had playback started the moment it was sent;
an echo's lateness against that is the round trip plus any delay. The smallest lateness of the recent
echoes is taken as the steady part (the round trip); whatever one echo has beyond it is treated as delay
in transit, and its anchor is moved back by that much. A steady lag (a slow network, Twilio's own
buffering) is therefore kept, and the estimate stays on the side of less heard, never more.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from switchboard.bridge.call.recent import RecentMap

MULAW_BYTES_PER_MS = 8
# Chunks kept since the last echoed mark (about 1 s of 20 ms chunks is the usual worst case); past this
# the anchor moves to the estimate itself, so a stream that stops echoing marks costs no more.
_MAX_SENDS = 256
# Echoes whose lateness sets the steady part (about 1.6 s of marks at the default 100 ms interval).
_LATENESS_WINDOW = 16


def mulaw_ms_of_base64(payload: str) -> float:
    """Duration of a base64 μ-law payload in ms, without decoding it (8 bytes per ms)."""
    length = len(payload)
    if length == 0:
        return 0.0
    padding = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return ((length * 3) // 4 - padding) / MULAW_BYTES_PER_MS


@dataclass(slots=True)
class _ItemPlayback:
    sent_ms: float = 0.0
    # Where the item's audio sits in the stream sent to the caller: [start, end) runs in stream ms.
    # Usually one run; thinking sound or another item can only come between two runs in odd races.
    runs: list[list[float]] = field(default_factory=list)


@dataclass(slots=True)  # not frozen: built per frame, frozen __init__ measured ~8 % CPU
class PendingMark:
    name: str
    item_id: str | None
    audio_end_ms: int
    """What of `item_id` had been sent when the mark went out (what the wire shows)."""
    stream_ms: float = 0.0
    """Everything sent to the caller before the mark, in ms of stream."""
    due_at: float = 0.0
    """When the audio before it would have finished playing, had playback started as it was sent."""


class PlaybackLedger:
    """Audio sent to the caller, marks in flight, and where playback is at a given time."""

    def __init__(self) -> None:
        self._items: RecentMap[str, _ItemPlayback] = RecentMap(256)  # old items are never asked about again
        self._pending: OrderedDict[str, PendingMark] = OrderedDict()
        self._mark_counter = 0
        self._sent_stream_ms = 0.0
        # The anchor: playback stood at `_anchor_ms` at time `_anchor_at` (None: nothing has played yet, so
        # the first chunk starts when it is sent).
        self._anchor_ms = 0.0
        self._anchor_at: float | None = None
        # Chunks sent since the anchor: (sent at, stream ms at the chunk's end).
        self._sends: deque[tuple[float, float]] = deque()
        # When everything sent would have played, had playback started as each chunk was sent.
        self._scheduled_end_at = 0.0
        self._lateness_s: deque[float] = deque(maxlen=_LATENESS_WINDOW)

    def record_sent(self, item_id: str | None, duration_ms: float, now: float) -> PendingMark:
        """Account audio sent for `item_id` at `now` and return the mark to send right after it."""
        self.record_sent_unmarked(item_id, duration_ms, now)
        return self.mark(item_id)

    def record_sent_unmarked(self, item_id: str | None, duration_ms: float, now: float) -> None:
        """Account audio sent at `now` for `item_id` (None: not model audio); a later `mark()` will cover it."""
        start = self._sent_stream_ms
        end = start + duration_ms
        self._sent_stream_ms = end
        self._scheduled_end_at = max(self._scheduled_end_at, now) + duration_ms / 1000.0
        sends = self._sends
        if len(sends) >= _MAX_SENDS:
            # No echo for a long while (marks lost?): re-anchor at the estimate, which walks on identically.
            self._anchor_ms = self.played_stream_ms(now)
            self._anchor_at = now
            while sends and sends[0][1] <= self._anchor_ms:
                sends.popleft()
        sends.append((now, end))
        if item_id is not None:
            item = self._items.get(item_id)
            if item is None:
                item = self._items[item_id] = _ItemPlayback()
            item.sent_ms += duration_ms
            runs = item.runs
            if runs and runs[-1][1] == start:
                runs[-1][1] = end
            else:
                runs.append([start, end])

    def mark(self, item_id: str | None) -> PendingMark:
        """The mark to send now: once echoed, it proves everything sent so far has played."""
        item = self._items.get(item_id) if item_id is not None else None
        end_ms = item.sent_ms if item is not None else 0.0
        self._mark_counter += 1
        mark = PendingMark(name=f"m{self._mark_counter}", item_id=item_id, audio_end_ms=int(end_ms),
                           stream_ms=self._sent_stream_ms, due_at=self._scheduled_end_at)
        self._pending[mark.name] = mark
        return mark

    def record_marked(self, name: str, now: float) -> PendingMark | None:
        """A mark echo at `now`. Returns the mark if it proves playback, None if unknown or flushed by a clear."""
        mark = self._pending.get(name)
        if mark is None:
            return None
        # Twilio plays in order: every mark sent before this one has played too.
        while self._pending:
            earlier_name, _ = self._pending.popitem(last=False)
            if earlier_name == name:
                break
        lateness_s = now - mark.due_at
        self._lateness_s.append(lateness_s)
        # Late beyond the recent steady part: delayed on the way back, not played later.
        excess_s = lateness_s - min(self._lateness_s)
        if mark.stream_ms >= self._anchor_ms:
            self._anchor_ms = mark.stream_ms
            self._anchor_at = now - excess_s
            sends = self._sends
            while sends and sends[0][1] <= mark.stream_ms:
                sends.popleft()
        return mark

    def record_cleared(self, now: float) -> None:
        """A `clear` was sent at `now`: Twilio dropped what it had not played; pending marks prove nothing."""
        self._pending.clear()
        self._anchor_ms = self._sent_stream_ms
        self._anchor_at = now
        self._sends.clear()
        self._scheduled_end_at = now

    def played_stream_ms(self, now: float) -> float:
        """Where playback stands at `now`, in ms of everything sent (see the module docstring)."""
        position = self._anchor_ms
        playing_from = self._anchor_at
        for sent_at, end in self._sends:
            if end <= position:
                continue
            begin = sent_at if playing_from is None or sent_at > playing_from else playing_from
            if now <= begin:
                return position
            length_s = (end - position) / 1000.0
            if now < begin + length_s:
                return position + (now - begin) * 1000.0
            position = end
            playing_from = begin + length_s
        return position

    def sent_ms(self, item_id: str) -> float:
        item = self._items.get(item_id)
        return item.sent_ms if item else 0.0

    def heard_ms(self, item_id: str, now: float) -> float:
        """How much of `item_id`'s audio the caller has heard by `now` (never more than was sent of it)."""
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        played = self.played_stream_ms(now)
        heard = 0.0
        for start, end in item.runs:
            if played <= start:
                break
            heard += (end if played >= end else played) - start
        return heard

    def unplayed_item_ids(self) -> set[str]:
        """Items with audio sent but not yet proven played (thinking sound has no item)."""
        return {m.item_id for m in self._pending.values() if m.item_id is not None}

    @property
    def has_unplayed_audio(self) -> bool:
        return bool(self._pending)

    def forget(self, item_id: str) -> None:
        self._items.pop(item_id, None)

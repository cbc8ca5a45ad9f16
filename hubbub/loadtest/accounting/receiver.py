"""One subscriber's side of the accounting: latency and sequence numbers per stream.

:meth:`Receiver.on_pub` runs once per received publication, so it is kept
short: read the stamp, step the stream's tracker (the in-order case inline),
record latency = now - intended time in the group's histogram.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hubbub.loadtest.accounting.payload import MAGIC, STAMP_SIZE, unpack_stamp
from hubbub.loadtest.accounting.sequences import (
    DUPLICATE,
    FILLED,
    GAP,
    SeqTracker,
    StreamInfo,
    Streams,
    Tally,
    account,
    as_tracker,
    lost_ranges,
)
from hubbub.loadtest.accounting.stats import Group, WorkerStats

_MAX_US = 3_600_000_000
#: What happened to a receiver's connection that it remembers (for the report's
#: sample of losses): the last few events.
TRAIL = 24


class Receiver:
    """The publications one user (one connection) receives, stream by stream."""

    __slots__ = ("group", "heard", "left", "run", "stats", "subscribed", "trail")

    def __init__(self, run: int, group: Group, stats: WorkerStats) -> None:
        self.run = run
        self.group = group
        self.stats = stats
        #: Channel -> stream -> ``first << 32 | next`` while in order, else a SeqTracker.
        self.heard: Streams = {}
        #: Channel -> when the first subscribe to it was confirmed (monotonic).
        self.subscribed: dict[str, float] = {}
        #: Channel -> when it was left (unsubscribe).
        self.left: dict[str, float] = {}
        #: The last events of its connection: (monotonic time, what).
        self.trail: deque[tuple[float, str]] = deque(maxlen=TRAIL)

    def note(self, now: float, what: str) -> None:
        """Remember an event of the connection (a loss, a re-subscribe, a ``lag``)."""
        self.trail.append((now, what))

    def joined(self, channel: str, now: float) -> None:
        """A subscribe to ``channel`` was confirmed (re-subscribes keep the first time)."""
        self.subscribed.setdefault(channel, now)
        self.left.pop(channel, None)

    def leave(self, channel: str, now: float) -> None:
        """Unsubscribed: expect nothing more on ``channel``."""
        self.left[channel] = now
        mine = self.heard.get(channel, {})
        for stream, state in mine.items():
            tracker = SeqTracker.unpack(state) if isinstance(state, int) else state
            if tracker.end is None:
                tracker.end = tracker.next - 1
            mine[stream] = tracker

    def reloaded(self, channel: str) -> None:
        """A re-subscribe to ``channel`` was answered ``recovered: false``: what
        is missed from here to the next number received is reloaded, not lost."""
        mine = self.heard.get(channel, {})
        for stream, state in mine.items():
            tracker = SeqTracker.unpack(state) if isinstance(state, int) else state
            tracker.reloads.append(tracker.next)
            mine[stream] = tracker

    def on_pub(self, channel: str, data: Any, now: float) -> None:
        """One received publication (``data`` as decoded), at ``now`` (monotonic)."""
        group = self.group
        group.received += 1
        if type(data) is not bytes or len(data) < STAMP_SIZE or not data.startswith(MAGIC):
            self.stats.counts["unstamped"] += 1
            return
        run, stream, seq, intended = unpack_stamp(data, 2)
        if run != self.run:
            self.stats.counts["foreign"] += 1
            return
        mine = self.heard.get(channel)
        if mine is None:
            mine = self.heard[channel] = {}
        state = mine.get(stream)
        if state is None:
            mine[stream] = (seq << 32) | (seq + 1) if seq < 0xFFFFFFFF else SeqTracker(seq)
        elif state.__class__ is int and seq == state & 0xFFFFFFFF:
            mine[stream] = state + 1
        else:
            self._out_of_line(mine, stream, state, seq)
        # Latency in us, cut to the histogram's resolution (hist.quantize), counted.
        us = int((now - intended) * 1e6)
        if us <= 0:
            us = 1
        elif us >= _MAX_US:
            us = _MAX_US
        else:
            shift = us.bit_length() - 11
            if shift > 0:
                us = us >> shift << shift
        counts = group.counts
        counts[us] = counts.get(us, 0) + 1

    def _out_of_line(
        self, mine: dict[int, int | SeqTracker], stream: int, state: int | SeqTracker, seq: int
    ) -> None:
        """Anything but the next number: a gap, a late one, a duplicate."""
        if isinstance(state, int):
            state = mine[stream] = SeqTracker.unpack(state)
        before = state.missing if state.holes else 0
        kind = state.add(seq)
        if kind in (GAP, FILLED):
            self.stats.gaps += state.missing - before
        elif kind == DUPLICATE:
            self.stats.counts["duplicates"] += 1

    def account(
        self, streams: dict[int, StreamInfo], by_channel: dict[str, list[int]], tally: Tally
    ) -> None:
        account(self.heard, self.subscribed, self.left, streams, by_channel, tally)

    def losses(
        self, streams: dict[int, StreamInfo], by_channel: dict[str, list[int]]
    ) -> list[dict[str, Any]]:
        """What this receiver lost, stream by stream, with its trail (call when its
        tally counted losses): the numbers, the intended time of number 1 of the
        stream and the receiver's subscribe time (monotonic)."""
        out = []
        for channel, since in self.subscribed.items():
            for stream in by_channel.get(channel, ()):
                info = streams[stream]
                tracker = as_tracker(self.heard.get(channel, {}).get(stream))
                ranges = lost_ranges(tracker, info, since)
                if ranges:
                    out.append(
                        {
                            "channel": channel,
                            "stream": stream,
                            "lost": ranges,
                            "first": info.first,
                            "subscribed": since,
                            "trail": list(self.trail),
                        }
                    )
        return out

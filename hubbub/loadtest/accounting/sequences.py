"""Accounting for every message: lost, duplicated, reordered.

A publisher numbers each of its streams 1, 2, 3 ... (:mod:`loadtest.accounting.payload`).
Each receiver keeps one :class:`SeqTracker` per stream it hears from. At the
end of a run the publishers' side (:class:`StreamInfo`: the highest number
written, and the numbers the server refused or never confirmed) is sent to
every worker, and :func:`account` compares, receiver by receiver:

- a receiver subscribed to the channel before the stream's first publication
  expects every number from 1; one that subscribed later expects from the
  first it received (what was in flight at its subscribe is not counted);
- expected = the numbers from there to the last one written, minus those the
  server refused or never confirmed (``nak``: their fate is unknown);
- lost = expected numbers that never arrived; a duplicate is a number that
  arrived again; reordered = arrived after a higher number.

So ``delivered + lost == expected`` always, and when every subscriber was in
place before publishing began, ``expected == sent x subscribers``.

- reloaded = numbers a receiver missed right after a recovery the server
  refused (a re-subscribe or a read of a gap answered ``recovered: false`` or
  410, or a publication of a new epoch: the history was wiped, e.g. a Redis
  restart without persistence): those from the position it recovered from to
  the next number received (to the end when none came). The server told the
  client, which reloads its state instead (PROTOCOL.md §3); they are not
  expected and are counted apart. A number missing *before* that position was
  skipped without the client knowing: lost, whatever came after.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, fields
from typing import Any

#: What :meth:`SeqTracker.add` reports about a number.
IN_ORDER, GAP, FILLED, DUPLICATE = 0, 1, 2, 3


#: A stream seen in order so far is kept as one int, ``first << 32 | next``
#: (no object per stream: a chat receiver hears thousands of streams, and
#: millions of small objects make the garbage collector pause the worker).
PACK_SHIFT = 32
PACK_MASK = (1 << PACK_SHIFT) - 1


def pack(first: int, nxt: int) -> int:
    return (first << PACK_SHIFT) | nxt


class SeqTracker:
    """The numbers seen from one stream by one receiver.

    ``first`` is the lowest seen and ``next`` one past the highest; ``holes``
    holds the missing ranges ``[lo, hi)`` between them, sorted.
    """

    __slots__ = ("count", "dup", "end", "first", "holes", "next", "reloads", "reorder")

    @classmethod
    def unpack(cls, packed: int) -> SeqTracker:
        """The tracker of a stream kept packed (every number from first to next - 1)."""
        tracker = cls(packed >> PACK_SHIFT)
        tracker.next = packed & PACK_MASK
        tracker.count = tracker.next - tracker.first
        return tracker

    def __init__(self, seq: int) -> None:
        self.first = seq
        self.next = seq + 1
        self.holes: list[list[int]] = []
        self.count = 1
        self.dup = 0
        self.reorder = 0
        #: Set when the receiver left the channel: numbers after it are not expected.
        self.end: int | None = None
        #: At each refused recovery, ``next`` then: the hole that starts there
        #: (the rest, when nothing came after) is reloaded.
        self.reloads: list[int] = []

    def add(self, seq: int) -> int:
        """Record ``seq``; returns IN_ORDER, GAP, FILLED or DUPLICATE."""
        nxt = self.next
        if seq == nxt:
            self.next = nxt + 1
            self.count += 1
            return IN_ORDER
        if seq > nxt:
            self.holes.append([nxt, seq])
            self.next = seq + 1
            self.count += 1
            return GAP
        if seq < self.first:
            if seq + 1 < self.first:
                self.holes.insert(0, [seq + 1, self.first])
            self.first = seq
            self.count += 1
            self.reorder += 1
            return FILLED
        holes = self.holes
        i = bisect_right(holes, [seq, float("inf")]) - 1
        if i >= 0:
            lo, hi = holes[i]
            if lo <= seq < hi:
                if lo + 1 == hi:
                    del holes[i]
                elif seq == lo:
                    holes[i][0] = lo + 1
                elif seq == hi - 1:
                    holes[i][1] = hi - 1
                else:
                    holes[i][1] = seq
                    holes.insert(i + 1, [seq + 1, hi])
                self.count += 1
                self.reorder += 1
                return FILLED
        self.dup += 1
        return DUPLICATE

    def has(self, seq: int) -> bool:
        """Whether ``seq`` arrived."""
        if not self.first <= seq < self.next:
            return False
        holes = self.holes
        i = bisect_right(holes, [seq, float("inf")]) - 1
        return not (i >= 0 and holes[i][0] <= seq < holes[i][1])

    @property
    def missing(self) -> int:
        """Numbers missing between the lowest and the highest seen (so far)."""
        return sum(hi - lo for lo, hi in self.holes)

    def missing_in(self, lo: int, hi: int) -> int:
        """Numbers in ``[lo, hi]`` that did not arrive."""
        if hi < lo:
            return 0
        missing = 0
        if lo < self.first:
            missing += min(self.first, hi + 1) - lo
        for h_lo, h_hi in self.holes:
            a, b = max(h_lo, lo), min(h_hi, hi + 1)
            if a < b:
                missing += b - a
        if self.next <= hi:
            missing += hi - max(self.next, lo) + 1
        return missing


@dataclass(frozen=True)
class StreamInfo:
    """What one publisher did on one stream (the publishers' side of the ledger)."""

    channel: str
    first: float
    """Intended time of number 1 (monotonic clock)."""
    last: int
    """Highest number written."""
    nak: frozenset[int] = frozenset()
    """Numbers refused by the server or never confirmed (connection lost)."""

    @property
    def sent(self) -> int:
        """Publications the server confirmed."""
        return self.last - len(self.nak)

    def to_wire(self) -> list[Any]:
        return [self.channel, self.first, self.last, sorted(self.nak)]

    @classmethod
    def from_wire(cls, item: list[Any]) -> StreamInfo:
        return cls(item[0], float(item[1]), int(item[2]), frozenset(item[3]))


class PublishedStream:
    """A publisher's running record of one stream (turned into a :class:`StreamInfo`)."""

    __slots__ = ("channel", "first", "last", "nak", "pending")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.first: float | None = None
        self.last = 0
        self.nak: set[int] = set()
        #: Numbers written and not yet confirmed.
        self.pending: set[int] = set()

    def next_seq(self, intended: float) -> int:
        """Number the next publication (call only when it is really written)."""
        if self.first is None:
            self.first = intended
        self.last += 1
        self.pending.add(self.last)
        return self.last

    def unwind(self, seq: int) -> None:
        """``seq`` (the last numbered) could not be written after all: take it back."""
        if seq == self.last:
            self.pending.discard(seq)
            self.last -= 1
            if self.last == 0:
                self.first = None

    def confirmed(self, seq: int, ok: bool) -> None:
        """The reply to ``seq`` arrived (``ok``), or failed, or will never come."""
        self.pending.discard(seq)
        if not ok:
            self.nak.add(seq)

    def info(self) -> StreamInfo | None:
        """The ledger entry; numbers still unconfirmed count as ``nak`` (fate unknown)."""
        if self.first is None:
            return None
        return StreamInfo(self.channel, self.first, self.last, frozenset(self.nak | self.pending))


@dataclass
class Tally:
    """Correctness counts of a set of receivers (summable)."""

    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    unconfirmed: int = 0
    """Arrived though the publisher never got the server's confirmation."""
    unknown: int = 0
    """Arrived from a stream no publisher reported."""
    reloaded: int = 0
    """Missed after a recovery the server refused (the client reloads): not expected."""

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_wire(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, data: dict[str, int]) -> Tally:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


def account_stream(
    tracker: SeqTracker | None, info: StreamInfo, subscribed_at: float, tally: Tally
) -> None:
    """Add one receiver's view of one stream to ``tally`` (see the module doc)."""
    if tracker is None:
        if subscribed_at <= info.first:
            expected = info.last - len(info.nak)
            tally.expected += expected
            tally.lost += expected
        return
    base = 1 if subscribed_at <= info.first else tracker.first
    top = info.last if tracker.end is None else min(info.last, tracker.end)
    tally.duplicates += tracker.dup
    tally.reordered += tracker.reorder
    if top < base:
        return
    expected = top - base + 1
    missing = tracker.missing_in(base, top)
    reloaded = _reloaded(tracker, base, top, info.nak)
    expected -= reloaded
    missing -= reloaded
    tally.reloaded += reloaded
    for seq in info.nak:
        if base <= seq <= top:
            expected -= 1
            if tracker.has(seq):
                tally.unconfirmed += 1
            else:
                missing -= 1
    tally.expected += expected
    tally.lost += missing
    tally.delivered += expected - missing


def lost_ranges(
    tracker: SeqTracker | None, info: StreamInfo, subscribed_at: float
) -> list[tuple[int, int]]:
    """The numbers :func:`account_stream` counts as lost, as ranges ``[lo, hi]``
    (for the report's sample: which stream lost what)."""
    if tracker is None:
        bounds = (1, info.last) if subscribed_at <= info.first else (1, 0)
        reloads: list[int] = []
    else:
        base = 1 if subscribed_at <= info.first else tracker.first
        top = info.last if tracker.end is None else min(info.last, tracker.end)
        bounds, reloads = (base, top), tracker.reloads
    out: list[tuple[int, int]] = []
    for seq in range(bounds[0], bounds[1] + 1):
        if seq in info.nak or (tracker is not None and tracker.has(seq)):
            continue
        if reloads and tracker is not None and _reloaded(tracker, seq, seq, info.nak):
            continue
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def _reloaded(tracker: SeqTracker, base: int, top: int, nak: frozenset[int]) -> int:
    """Missing numbers of ``[base, top]`` (not refused ones: those are not
    expected anyway) that a refused recovery covers (see the module doc)."""
    spans: set[tuple[int, int]] = set()  # [lo, hi)
    for point in tracker.reloads:
        if point >= tracker.next:
            spans.add((point, top + 1))  # nothing arrived after it
        for lo, hi in tracker.holes:
            if lo == point:
                spans.add((lo, hi))
    total = 0
    for lo, hi in spans:
        lo, hi = max(lo, base), min(hi, top + 1)
        if lo < hi:
            gone = tracker.missing_in(lo, hi - 1)
            total += gone - sum(1 for seq in nak if lo <= seq < hi and not tracker.has(seq))
    return total


#: A receiver's streams: channel -> stream id -> packed int or tracker.
Streams = dict[str, dict[int, "int | SeqTracker"]]


def as_tracker(state: int | SeqTracker | None) -> SeqTracker | None:
    return SeqTracker.unpack(state) if isinstance(state, int) else state


def account(
    heard: Streams,
    subscribed: dict[str, float],
    left: dict[str, float],
    streams: dict[int, StreamInfo],
    by_channel: dict[str, list[int]],
    tally: Tally,
) -> None:
    """Add one receiver to ``tally``: what it heard per channel, and when it joined
    and left each channel.

    After leaving a channel (``left``; its trackers then have an ``end``) a
    receiver expects nothing more there, and nothing from streams it had not
    heard from yet.
    """
    for channel, since in subscribed.items():
        gone = left.get(channel)
        mine = heard.get(channel, {})
        for stream in by_channel.get(channel, ()):
            tracker = as_tracker(mine.get(stream))
            info = streams[stream]
            if gone is not None and (tracker is None or gone < info.first):
                continue
            account_stream(tracker, info, since, tally)
    for channel, mine in heard.items():
        for stream, state in mine.items():
            known = streams.get(stream)
            tracker = as_tracker(state)
            assert tracker is not None
            if known is None or known.channel != channel:
                tally.unknown += tracker.count
            elif channel not in subscribed:  # not a channel it subscribed to
                account_stream(tracker, known, float("inf"), tally)


def index_by_channel(streams: dict[int, StreamInfo]) -> dict[str, list[int]]:
    """Stream ids per channel."""
    out: dict[str, list[int]] = {}
    for stream, info in streams.items():
        out.setdefault(info.channel, []).append(stream)
    return out

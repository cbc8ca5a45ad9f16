"""Sequence accounting: loss, duplicates and reordering, and the final ledger."""

from __future__ import annotations

import random

from hubbub.loadtest.accounting.sequences import (
    DUPLICATE,
    FILLED,
    GAP,
    IN_ORDER,
    PublishedStream,
    SeqTracker,
    StreamInfo,
    Tally,
    account,
    account_stream,
    as_tracker,
    index_by_channel,
    pack,
)


def feed(seqs: list[int]) -> SeqTracker:
    tracker = SeqTracker(seqs[0])
    for seq in seqs[1:]:
        tracker.add(seq)
    return tracker


def test_in_order_gap_fill_duplicate() -> None:
    t = SeqTracker(1)
    assert t.add(2) == IN_ORDER
    assert t.add(5) == GAP
    assert t.holes == [[3, 5]] and t.missing == 2
    assert t.add(4) == FILLED
    assert t.holes == [[3, 4]]
    assert t.add(3) == FILLED
    assert t.holes == [] and t.reorder == 2
    assert t.add(4) == DUPLICATE and t.add(1) == DUPLICATE
    assert (t.first, t.next, t.count, t.dup) == (1, 6, 5, 2)


def test_filling_the_middle_of_a_hole_splits_it() -> None:
    t = feed([1, 10])
    t.add(5)
    assert t.holes == [[2, 5], [6, 10]]
    assert t.has(5) and not t.has(4) and not t.has(6) and t.has(10) and not t.has(11)
    assert t.missing_in(1, 12) == 3 + 4 + 2  # holes, and 11-12 never came


def test_an_earlier_number_than_the_first_extends_backwards() -> None:
    t = feed([5, 6, 2])
    assert t.first == 2 and t.holes == [[3, 5]] and t.reorder == 1
    assert t.add(1) == FILLED and t.first == 1 and t.holes == [[3, 5]]


def test_random_permutations_with_drops_and_dups_are_counted_exactly() -> None:
    rng = random.Random(11)
    for _ in range(200):
        n = rng.randint(1, 60)
        sent = list(range(1, n + 1))
        kept = [s for s in sent if rng.random() > 0.2] or [1]
        delivered = kept + rng.sample(kept, k=min(len(kept), rng.randint(0, 3)))
        rng.shuffle(delivered)
        t = feed(delivered)
        assert t.count == len(set(kept))
        assert t.dup == len(delivered) - len(set(kept))
        assert t.missing_in(1, n) == n - len(set(kept))
        assert all(t.has(s) == (s in kept) for s in sent)


def test_subscriber_present_from_the_start_expects_everything() -> None:
    info = StreamInfo("c", first=10.0, last=100)
    tally = Tally()
    account_stream(feed(list(range(3, 90))), info, subscribed_at=5.0, tally=tally)
    assert (tally.expected, tally.delivered, tally.lost) == (100, 87, 13)


def test_late_subscriber_counts_from_its_first_publication() -> None:
    info = StreamInfo("c", first=10.0, last=100)
    tally = Tally()
    account_stream(feed(list(range(40, 101))), info, subscribed_at=20.0, tally=tally)
    assert (tally.expected, tally.delivered, tally.lost) == (61, 61, 0)


def test_a_subscriber_that_heard_nothing_lost_everything_sent_after_it_joined() -> None:
    tally = Tally()
    account_stream(None, StreamInfo("c", 10.0, 50, frozenset({7})), 5.0, tally)
    assert (tally.expected, tally.lost) == (49, 49)
    later = Tally()
    account_stream(None, StreamInfo("c", 10.0, 50), 20.0, later)
    assert later.expected == 0  # joined after the stream began: nothing to compare


def test_unconfirmed_publications_are_not_expected() -> None:
    # 5 was refused (never published), 9 unconfirmed but it arrived anyway.
    info = StreamInfo("c", 0.0, 10, frozenset({5, 9}))
    tally = Tally()
    account_stream(feed([1, 2, 3, 4, 6, 7, 9, 10]), info, -1.0, tally)
    assert (tally.expected, tally.delivered, tally.lost, tally.unconfirmed) == (8, 7, 1, 1)


def test_duplicates_and_reordering_are_reported() -> None:
    tally = Tally()
    account_stream(feed([1, 3, 2, 3, 4]), StreamInfo("c", 0.0, 4), -1.0, tally)
    assert (tally.duplicates, tally.reordered, tally.lost) == (1, 1, 0)


def test_account_follows_joins_and_leaves() -> None:
    streams = {
        1: StreamInfo("a", 0.0, 10),
        2: StreamInfo("b", 0.0, 10),
        3: StreamInfo("b", 50.0, 10),  # began after the receiver left b
    }
    left_b = feed([1, 2, 3])
    left_b.end = 3  # left b after number 3
    heard: dict[str, dict[int, int | SeqTracker]] = {
        "a": {1: pack(1, 11)},  # in order: kept packed
        "b": {2: left_b},
    }
    tally = Tally()
    account(heard, {"a": -1.0, "b": -1.0}, {"b": 20.0}, streams, index_by_channel(streams), tally)
    assert (tally.expected, tally.delivered, tally.lost) == (13, 13, 0)


def test_packed_streams_unpack_to_trackers() -> None:
    t = SeqTracker.unpack(pack(5, 9))
    assert (t.first, t.next, t.count, t.holes) == (5, 9, 4, [])
    assert as_tracker(None) is None and as_tracker(t) is t


def test_publications_from_unknown_streams_are_counted_apart() -> None:
    tally = Tally()
    account({"a": {9: feed([1, 2])}}, {"a": 0.0}, {}, {}, {}, tally)
    assert tally.unknown == 2 and tally.expected == 0


def test_published_stream_ledger() -> None:
    record = PublishedStream("c")
    assert record.info() is None
    seqs = [record.next_seq(1.0 + i) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    record.confirmed(1, True)
    record.confirmed(2, False)
    record.confirmed(3, True)
    info = record.info()
    assert info is not None
    assert (info.first, info.last, info.nak, info.sent) == (1.0, 5, frozenset({2, 4, 5}), 2)
    record.unwind(5)
    assert record.last == 4
    assert StreamInfo.from_wire(info.to_wire()) == info


def test_tally_sums_and_round_trips() -> None:
    a, b = Tally(expected=3, delivered=2, lost=1), Tally(expected=1, delivered=1)
    a.add(b)
    assert a == Tally(expected=4, delivered=3, lost=1)
    assert Tally.from_wire(a.to_wire()) == a

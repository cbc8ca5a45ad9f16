"""loadtest accounting: numbers missed after a refused recovery are reloaded, not lost."""

from __future__ import annotations

from hubbub.loadtest.accounting.sequences import SeqTracker, StreamInfo, Tally, account_stream


def test_a_refused_recovery_turns_the_following_gap_into_reloaded() -> None:
    tracker = SeqTracker(1)
    for seq in range(2, 6):
        tracker.add(seq)
    tracker.reloads.append(tracker.next)  # recovered: false while 6.. were missed
    for seq in range(9, 12):
        tracker.add(seq)
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 11), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered, tally.expected) == (3, 0, 8, 8)


def test_a_gap_without_a_reload_is_lost() -> None:
    tracker = SeqTracker(1)
    tracker.add(2)
    tracker.add(5)
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 5), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered) == (0, 2, 3)


def test_refused_numbers_in_a_reloaded_gap_are_not_counted_twice() -> None:
    tracker = SeqTracker(1)
    tracker.add(2)
    tracker.reloads.append(tracker.next)  # recovered: false from 2
    tracker.add(6)  # 3..5 missed: 3 refused by the server, 4, 5 in the gap
    tracker.add(7)
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 7, frozenset({3})), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered, tally.expected) == (2, 0, 4, 4)


def test_a_gap_before_the_refused_position_stays_lost() -> None:
    """A refusal covers what follows the position the client recovered from;
    numbers it skipped before that position (it never knew) are lost: they
    were once counted reloaded, which hid the fast path's losses of a
    re-subscribe whose publications were skipped."""
    tracker = SeqTracker(1)
    tracker.add(2)
    tracker.add(6)  # 3..5 skipped without a word
    tracker.reloads.append(tracker.next)  # later, recovered: false from 6
    tracker.add(9)  # 7, 8 reloaded
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 9), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered, tally.expected) == (2, 3, 4, 7)


def test_a_refusal_with_nothing_after_it_reloads_the_rest() -> None:
    tracker = SeqTracker(1)
    tracker.add(2)
    tracker.reloads.append(tracker.next)
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 5), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered, tally.expected) == (3, 0, 2, 2)


def test_two_refusals_count_each_missing_number_once() -> None:
    tracker = SeqTracker(1)
    tracker.reloads.append(tracker.next)  # at 2
    tracker.add(5)  # 2..4 reloaded
    tracker.reloads.append(tracker.next)  # at 6
    tracker.add(8)  # 6, 7 reloaded
    tally = Tally()
    account_stream(tracker, StreamInfo("c", 0.0, 8), 0.0, tally)
    assert (tally.reloaded, tally.lost, tally.delivered) == (5, 0, 3)

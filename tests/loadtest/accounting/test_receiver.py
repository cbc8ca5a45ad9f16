"""The receiving hot path: stamps, trackers, latency (no sockets)."""

from __future__ import annotations

import time

from hubbub.loadtest.accounting.payload import make_payload, stream_id
from hubbub.loadtest.accounting.receiver import Receiver
from hubbub.loadtest.accounting.sequences import StreamInfo, Tally, index_by_channel
from hubbub.loadtest.accounting.stats import WorkerStats


def test_receiver_tracks_streams_and_latency() -> None:
    stats = WorkerStats()
    group = stats.group("fast")
    receiver = Receiver(run=5, group=group, stats=stats)
    receiver.joined("c", 0.0)
    sid = stream_id(3, 0)
    now = time.monotonic()
    for seq in (1, 2, 4, 3, 3):
        receiver.on_pub("c", make_payload(5, sid, seq, now - 0.010, 64), now)
    receiver.on_pub("c", make_payload(6, sid, 9, now, 64), now)  # another run
    receiver.on_pub("c", {"text": "hello"}, now)  # not ours
    assert group.received == 7
    assert stats.counts["foreign"] == 1 and stats.counts["unstamped"] == 1
    assert stats.counts["duplicates"] == 1
    assert stats.gaps == 0  # the gap at 3 opened and closed
    group.flush()
    assert group.hist.get_total_count() == 5
    assert 9_900 < group.hist.get_value_at_percentile(50) < 10_100  # microseconds
    streams = {sid: StreamInfo("c", 1.0, 5)}
    tally = Tally()
    receiver.account(streams, index_by_channel(streams), tally)
    assert (tally.expected, tally.delivered, tally.lost, tally.duplicates, tally.reordered) == (
        5, 4, 1, 1, 1,
    )  # fmt: skip


def test_leaving_a_channel_freezes_its_streams() -> None:
    stats = WorkerStats()
    receiver = Receiver(1, stats.group("all"), stats)
    receiver.joined("c", 0.0)
    sid = stream_id(1, 0)
    for seq in (1, 2):
        receiver.on_pub("c", make_payload(1, sid, seq, 0.0, 40), 1.0)
    receiver.leave("c", 2.0)
    streams = {sid: StreamInfo("c", 0.5, 10)}
    tally = Tally()
    receiver.account(streams, index_by_channel(streams), tally)
    assert (tally.expected, tally.lost) == (2, 0)


def test_tick_reports_deltas_and_fresh_histograms() -> None:
    stats = WorkerStats()
    group = stats.group("all")
    group.received += 3
    group.hist.record_value(100)
    stats.request("publish", 0.002)
    stats.request("publish", None, ok=False)
    stats.error("publish 429")
    stats.disconnects["3001"] += 1
    first = stats.tick()
    assert first["groups"]["all"]["received"] == 3 and first["groups"]["all"]["hist"]
    assert first["requests"]["publish"]["count"] == 2
    assert first["requests"]["publish"]["failures"] == 1
    assert first["errors"] == {"publish 429": 1} and first["disconnects"] == {"3001": 1}
    second = stats.tick()
    assert second["groups"]["all"] == {"received": 0, "hist": ""}
    assert second["requests"] == {} and second["errors"] == {}


def test_losses_name_the_stream_the_numbers_and_the_trail() -> None:
    """The report's sample of losses: which stream lost which numbers, beside
    what happened to the connection (refused numbers and reloaded ones are no
    losses)."""
    stats = WorkerStats()
    receiver = Receiver(run=1, group=stats.group("all"), stats=stats)
    receiver.joined("c", 0.0)
    receiver.note(1.0, "lost 3001")
    sid = stream_id(0, 0)
    for seq in (1, 2, 5, 6, 9):
        receiver.on_pub("c", make_payload(1, sid, seq, 0.5, 64), 2.0)
    receiver.reloaded("c")  # refused after 9: 10 reloaded
    receiver.on_pub("c", make_payload(1, sid, 11, 0.5, 64), 2.0)
    streams = {sid: StreamInfo("c", 0.5, 12, frozenset({7}))}
    tally = Tally()
    receiver.account(streams, index_by_channel(streams), tally)
    assert (tally.lost, tally.reloaded) == (4, 1)
    [loss] = receiver.losses(streams, index_by_channel(streams))
    assert loss["stream"] == sid and loss["lost"] == [(3, 4), (8, 8), (12, 12)]
    assert loss["trail"] == [(1.0, "lost 3001")]

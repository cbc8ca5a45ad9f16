"""Subscription queue, de-duplication and recovery bookkeeping, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from hubbub.client import (
    ChannelEvent,
    Client,
    Disconnected,
    Publication,
    StreamPosition,
    Subscription,
)
from hubbub.client.client import backoff_delay


def make(**kwargs: object) -> Subscription:
    return Subscription(Client("tcp://127.0.0.1:1"), "h:chat", **kwargs)  # type: ignore[arg-type]


def pub(offset: int | None, data: object = None) -> Publication:
    return Publication("h:chat", data if data is not None else offset, offset)


def drain(sub: Subscription) -> list[object]:
    out = []
    while (p := sub.get_nowait()) is not None:
        out.append(p.data)
    return out


def test_offsets_within_the_overlap_are_skipped() -> None:
    sub = make()
    sub._apply_subscribe({"offset": 4, "epoch": "e"}, asked_recovery=False)
    for offset in (3, 4, 2, 5, 6):
        sub._deliver(pub(offset))
    assert drain(sub) == [5, 6]
    assert sub.position == StreamPosition(6, "e")


def test_offsets_going_back_past_the_overlap_mean_a_restart() -> None:
    events: list[ChannelEvent] = []
    sub = make(on_event=events.append)
    sub._apply_subscribe({"offset": 4, "epoch": "e"}, asked_recovery=False)
    for offset in (5, 6, 1, 2):  # history expired: a new epoch from 1
        sub._deliver(pub(offset))
    assert drain(sub) == [5, 6, 1, 2]
    assert events == [ChannelEvent("reset", "h:chat")]
    assert sub.recovered is False
    assert sub.position == StreamPosition(2, "e")


def test_epoch_on_pub_decides_exactly() -> None:
    events: list[ChannelEvent] = []
    sub = make(on_event=events.append)
    sub._apply_subscribe({"offset": 4, "epoch": "e"}, asked_recovery=False)
    sub._deliver(Publication("h:chat", "dup", 3, None, "e"))
    sub._deliver(Publication("h:chat", "new", 1, None, "f"))
    assert drain(sub) == ["new"]
    assert sub.position == StreamPosition(1, "f")
    assert [e.kind for e in events] == ["reset"]


def test_publications_without_offset_are_never_deduplicated() -> None:
    sub = make()
    sub._deliver(pub(None, "a"))
    sub._deliver(pub(None, "a"))
    assert drain(sub) == ["a", "a"]
    assert sub.position is None


def test_bounded_queue_drops_and_counts() -> None:
    sub = make(maxsize=2)
    for i in range(5):
        sub._deliver(pub(None, i))
    assert drain(sub) == [0, 1]
    assert sub.dropped == 3


def test_recovered_publications_come_before_held_live_ones() -> None:
    sub = make(since=StreamPosition(2, "e"))
    sub.state = "subscribed"
    sub._hold()
    sub._deliver(pub(5))  # live, arrives while the re-subscribe is in flight
    reply = {
        "offset": 5,
        "epoch": "e",
        "recovered": True,
        "publications": [
            {"data": 3, "offset": 3},
            {"data": 4, "offset": 4},
            {"data": 5, "offset": 5},
        ],
    }
    sub._apply_subscribe(reply, asked_recovery=True)
    sub._deliver(pub(6))
    assert drain(sub) == [3, 4, 5, 6]
    assert sub.recovered is True


def test_failed_recovery_resets_position_and_fires_event() -> None:
    events: list[ChannelEvent] = []
    sub = make(since=StreamPosition(7, "old"), on_event=events.append)
    sub._apply_subscribe({"offset": 2, "epoch": "new", "recovered": False}, asked_recovery=True)
    sub._deliver(pub(3))
    assert drain(sub) == [3]
    assert sub.recovered is False
    assert sub.position == StreamPosition(3, "new")
    assert events == [ChannelEvent("reset", "h:chat")]


async def test_iteration_ends_after_queue_is_consumed() -> None:
    sub = make()
    sub._deliver(pub(None, "x"))
    sub._finish()
    assert [p.data async for p in sub] == ["x"]


async def test_final_error_is_raised_after_queued_items() -> None:
    sub = make()
    sub._deliver(pub(None, "x"))
    sub._finish(Disconnected(3004, "protocol error", reconnect=False))
    assert (await anext(sub)).data == "x"
    with pytest.raises(Disconnected):
        await anext(sub)


async def test_waiting_consumer_is_woken() -> None:
    sub = make()
    task = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    sub._deliver(pub(None, "late"))
    assert (await task).data == "late"


def test_backoff_is_full_jitter_with_cap() -> None:
    assert backoff_delay(0, 0.1, 10.0, lambda: 1.0) == pytest.approx(0.1)
    assert backoff_delay(3, 0.1, 10.0, lambda: 1.0) == pytest.approx(0.8)
    assert backoff_delay(50, 0.1, 10.0, lambda: 1.0) == 10.0
    assert backoff_delay(5, 0.1, 10.0, lambda: 0.0) == 0.0


def test_first_publication_after_the_empty_position_is_no_restart() -> None:
    """Reads create no history: the empty position's epoch (``~...``) is
    replaced by the first publication's, which is not a reset."""
    events: list[ChannelEvent] = []
    sub = make(on_event=events.append)
    sub._apply_subscribe({"offset": 0, "epoch": "~a.1"}, asked_recovery=False)
    sub._deliver(Publication("h:chat", "first", 1, None, "real"))
    sub._deliver(Publication("h:chat", "second", 2, None, "real"))
    assert drain(sub) == ["first", "second"]
    assert events == [] and sub.position == StreamPosition(2, "real")

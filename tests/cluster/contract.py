"""The broker contract: what every engine must do (cluster/broker.py's docstring).

An engine's test module subclasses :class:`BrokerContract` (a Redis engine:
:class:`RedisContract`) and provides a ``broker`` fixture: an async fixture that
starts the engine with the ``handler`` fixture (``tests/cluster/conftest.py``)
and yields it, closing it afterwards::

    @pytest_asyncio.fixture
    async def broker(handler: RecordingHandler) -> AsyncIterator[Broker]:
        engine = MemoryBroker()
        await engine.start(handler)
        yield engine
        await engine.close()

    class TestMemoryBroker(BrokerContract):
        pass

The cases hold for any engine: delivery may be asynchronous (they wait for the
handler with :meth:`RecordingHandler.wait_for`), the backend may be shared
between tests (each test gets a fresh ``channel`` name), and time is never faked.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from hubbub.cluster.broker import Broker, BrokerHandler, ChannelOptions, ClientInfo, Publication
from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.frames import FrameDecoder
from hubbub.protocol.messages import StreamPosition
from hubbub.server.hub import Hub
from hubbub.server.metrics import Stats
from hubbub.server.wire import Format

HISTORY = ChannelOptions(history_size=100, history_ttl=300.0)
NO_HISTORY = ChannelOptions()

#: Data that must survive any engine's encoding: bytes, unicode, nesting.
RICH_DATA: dict[str, Any] = {
    "text": "héllo ✓",
    "blob": b"\x00\xff\x10binary",
    "numbers": [0, -1, 2**40, 2.5, True, None],
    "nested": {"a": {"b": [b"x", {"c": "d"}]}, "empty": {}},
}


class RecordingHandler:
    """A :class:`~cluster.broker.BrokerHandler` that records every call."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.leaves: list[tuple[str, ClientInfo]] = []
        self.gaps: list[str] = []
        #: A node-side handler (the hub) that also gets every publication.
        self.forward: BrokerHandler | None = None

    def on_publication(self, pub: Publication) -> None:
        self.publications.append(pub)
        if self.forward is not None:
            self.forward.on_publication(pub)

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))

    def on_gap(self, channel: str) -> None:
        self.gaps.append(channel)

    async def wait_for(
        self, n: int, *, timeout: float = 2.0, kind: str = "publications"
    ) -> list[Any]:
        """Wait until ``n`` calls of ``kind`` were recorded (engines may deliver
        asynchronously); returns the record."""
        record: list[Any] = getattr(self, kind)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(record) < n:
            if loop.time() > deadline:
                raise AssertionError(f"expected {n} {kind}, got {len(record)}: {record!r}")
            await asyncio.sleep(0.005)
        return record

    async def settle(self, delay: float = 0.1) -> None:
        """Give an asynchronous engine time to deliver what it should not.

        Used before asserting that nothing arrived: it can only let a bug pass,
        never fail a correct engine.
        """
        await asyncio.sleep(delay)


def offsets(pubs: list[Publication]) -> list[int | None]:
    return [p.offset for p in pubs]


class Subscriber:
    """A subscriber as the hub sees it: a connection with an outbox (here itself)."""

    fmt = Format.TCP
    client_id = "contract"

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.outbox = self

    def deliver(self, data: bytes, channel: str) -> None:
        (payload,) = FrameDecoder(2**31).feed(data)
        self.offsets.append(decode_msgpack(payload)["offset"])

    def write(self, data: bytes) -> None:
        pass


class BrokerContract:
    """Cases every engine passes; subclass it beside a ``broker`` fixture and
    say how to see whether the engine holds history state for a channel
    (:meth:`stored`)."""

    async def stored(self, broker: Broker, channel: str) -> bool:
        """Whether the engine holds any history state of ``channel``."""
        raise NotImplementedError

    @pytest.fixture
    def channel(self) -> str:
        """A channel no other test (or earlier run on a shared backend) used."""
        return f"contract:{uuid.uuid4().hex}"

    # -- delivery ------------------------------------------------------------

    async def test_publish_reaches_subscriber_once_in_order(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        positions = [await broker.publish(channel, i, options=HISTORY) for i in range(1, 21)]
        pubs = await handler.wait_for(20)
        await handler.settle()
        assert len(handler.publications) == 20
        assert [p.data for p in pubs] == list(range(1, 21))
        assert offsets(pubs) == list(range(1, 21))
        assert {p.channel for p in pubs} == {channel}
        epochs = {p.epoch for p in pubs}
        assert len(epochs) == 1 and None not in epochs
        assert positions == [StreamPosition(i, pubs[0].epoch) for i in range(1, 21)]

    async def test_concurrent_publishes_get_distinct_consecutive_offsets(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        positions = await asyncio.gather(
            *(broker.publish(channel, i, options=HISTORY) for i in range(10))
        )
        assert sorted(p.offset for p in positions if p) == list(range(1, 11))
        pubs = await handler.wait_for(10)
        assert offsets(pubs) == list(range(1, 11))  # delivered in offset order

    async def test_unsubscribed_channel_is_not_delivered(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        other = channel + ".other"
        await broker.publish(other, "not for us", options=HISTORY)
        await broker.publish(channel, "for us", options=HISTORY)
        await handler.wait_for(1)
        await handler.settle()
        assert [p.data for p in handler.publications] == ["for us"]

    async def test_unsubscribe_stops_delivery(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        await broker.publish(channel, "before", options=HISTORY)
        await handler.wait_for(1)
        await broker.unsubscribe(channel)
        await broker.publish(channel, "after", options=HISTORY)
        await handler.settle()
        assert [p.data for p in handler.publications] == ["before"]

    async def test_resubscribe_delivers_again(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        await broker.unsubscribe(channel)
        await broker.subscribe(channel)
        await broker.publish(channel, "again", options=HISTORY)
        await handler.wait_for(1)
        await handler.settle()
        assert [p.data for p in handler.publications] == ["again"]

    async def test_sender_survives(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        sender = ClientInfo("client-1", "user-1")
        await broker.subscribe(channel)
        await broker.publish(channel, "hi", options=HISTORY, sender=sender)
        await broker.publish(channel, "anonymous", options=HISTORY)
        pubs = await handler.wait_for(2)
        # The ``from`` of a pub push (PROTOCOL.md §3) needs client and user.
        assert pubs[0].sender is not None
        assert pubs[0].sender.sender() == {"client": "client-1", "user": "user-1"}
        assert pubs[1].sender is None
        history = await broker.history(channel, options=HISTORY)
        stored = history.publications[0].sender
        assert stored is not None and stored.sender() == sender.sender()

    async def test_bytes_and_nested_data_survive(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        await broker.publish(channel, RICH_DATA, options=HISTORY)
        await broker.publish(channel, b"\x00raw", options=NO_HISTORY)
        pubs = await handler.wait_for(2)
        assert pubs[0].data == RICH_DATA
        assert pubs[1].data == b"\x00raw"
        history = await broker.history(channel, options=HISTORY)
        assert [p.data for p in history.publications] == [RICH_DATA]

    # -- channels without history --------------------------------------------

    async def test_channel_without_history_has_no_offsets(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        await broker.subscribe(channel)
        assert await broker.publish(channel, "a", options=NO_HISTORY) is None
        (pub,) = await handler.wait_for(1)
        assert (pub.data, pub.offset, pub.epoch) == ("a", None, None)
        result = await broker.history(channel, options=NO_HISTORY)
        assert result.publications == []
        assert result.position.offset == 0

    # -- history -------------------------------------------------------------

    async def test_reads_create_no_history(self, broker: Broker, channel: str) -> None:
        """History exists from the first publication only (reads store nothing);
        a reader of the empty position recovers from the first publication on."""
        first = await broker.history(channel, options=HISTORY, limit=0)
        again = await broker.history(channel, options=HISTORY)
        assert first.publications == [] and again.publications == []
        assert first.position.offset == 0 and first.position.epoch
        assert again.position.offset == 0 and again.position.epoch
        nothing = await broker.recover(channel, first.position, options=HISTORY)
        assert nothing.recovered and nothing.publications == []
        assert not await self.stored(broker, channel)
        position = await broker.publish(channel, "one", options=HISTORY)
        assert position is not None and position.offset == 1
        assert await self.stored(broker, channel)
        recovery = await broker.recover(channel, first.position, options=HISTORY)
        assert recovery.recovered
        assert [p.data for p in recovery.publications] == ["one"]
        assert recovery.position == position
        since = await broker.history(channel, options=HISTORY, since=again.position)
        assert [p.data for p in since.publications] == ["one"]

    async def test_empty_position_is_gone_once_trimmed_or_forged(
        self, broker: Broker, channel: str
    ) -> None:
        empty = (await broker.history(channel, options=HISTORY, limit=0)).position
        small = ChannelOptions(history_size=2, history_ttl=300.0)
        for i in range(3):
            await broker.publish(channel, i, options=small)
        recovery = await broker.recover(channel, empty, options=small)
        assert not recovery.recovered and recovery.position.offset == 3
        for forged in ("~", "~x.1", empty.epoch + "0" * 20, "~" + empty.epoch[1:] + "x"):
            with pytest.raises(PositionGone):
                await broker.history(channel, options=small, since=StreamPosition(0, forged))
        with pytest.raises(PositionGone):
            await broker.history(channel, options=small, since=StreamPosition(1, empty.epoch))

    async def test_history_without_since(self, broker: Broker, channel: str) -> None:
        for i in range(1, 6):
            await broker.publish(channel, i, options=HISTORY)
        full = await broker.history(channel, options=HISTORY)
        assert offsets(full.publications) == [1, 2, 3, 4, 5]
        assert [p.data for p in full.publications] == [1, 2, 3, 4, 5]
        assert {p.channel for p in full.publications} == {channel}
        assert full.position == StreamPosition(5, full.publications[0].epoch or "")
        last = await broker.history(channel, options=HISTORY, limit=2)
        assert offsets(last.publications) == [4, 5]
        assert last.position == full.position
        none = await broker.history(channel, options=HISTORY, limit=0)
        assert none.publications == [] and none.position == full.position
        more = await broker.history(channel, options=HISTORY, limit=50)
        assert offsets(more.publications) == [1, 2, 3, 4, 5]

    async def test_history_since(self, broker: Broker, channel: str) -> None:
        for i in range(1, 6):
            await broker.publish(channel, i, options=HISTORY)
        epoch = (await broker.history(channel, options=HISTORY, limit=0)).position.epoch
        after = await broker.history(channel, options=HISTORY, since=StreamPosition(2, epoch))
        assert offsets(after.publications) == [3, 4, 5]
        assert after.position == StreamPosition(5, epoch)
        first = await broker.history(
            channel, options=HISTORY, since=StreamPosition(1, epoch), limit=2
        )
        assert offsets(first.publications) == [2, 3]
        assert first.position == StreamPosition(5, epoch)  # the top, not the page end
        start = await broker.history(channel, options=HISTORY, since=StreamPosition(0, epoch))
        assert offsets(start.publications) == [1, 2, 3, 4, 5]

    async def test_since_at_top_is_empty(self, broker: Broker, channel: str) -> None:
        position = None
        for i in range(3):
            position = await broker.publish(channel, i, options=HISTORY)
        assert position is not None
        result = await broker.history(channel, options=HISTORY, since=position)
        assert result.publications == []
        assert result.position == position

    async def test_since_from_another_epoch_is_gone(self, broker: Broker, channel: str) -> None:
        await broker.publish(channel, "x", options=HISTORY)
        with pytest.raises(PositionGone):
            await broker.history(channel, options=HISTORY, since=StreamPosition(0, "other"))
        with pytest.raises(PositionGone):
            await broker.history(channel, options=HISTORY, since=StreamPosition(1, "other"))

    async def test_since_beyond_top_is_gone(self, broker: Broker, channel: str) -> None:
        position = await broker.publish(channel, "x", options=HISTORY)
        assert position is not None
        with pytest.raises(PositionGone):
            await broker.history(
                channel, options=HISTORY, since=StreamPosition(position.offset + 1, position.epoch)
            )

    async def test_history_size_caps_history(self, broker: Broker, channel: str) -> None:
        small = ChannelOptions(history_size=3, history_ttl=300.0)
        for i in range(1, 8):
            assert (await broker.publish(channel, i, options=small)) is not None
        result = await broker.history(channel, options=small)
        assert offsets(result.publications) == [5, 6, 7]
        assert [p.data for p in result.publications] == [5, 6, 7]
        assert result.position.offset == 7

    async def test_since_trimmed_away_is_gone(self, broker: Broker, channel: str) -> None:
        small = ChannelOptions(history_size=3, history_ttl=300.0)
        for i in range(1, 8):
            await broker.publish(channel, i, options=small)
        epoch = (await broker.history(channel, options=small, limit=0)).position.epoch
        for lost in (0, 1, 3):
            with pytest.raises(PositionGone):
                await broker.history(channel, options=small, since=StreamPosition(lost, epoch))
        # Offset 4 is gone but everything after it is still there: recoverable.
        result = await broker.history(channel, options=small, since=StreamPosition(4, epoch))
        assert offsets(result.publications) == [5, 6, 7]

    # -- recovery ------------------------------------------------------------

    async def test_recover_returns_exactly_the_missed(self, broker: Broker, channel: str) -> None:
        positions = [await broker.publish(channel, i, options=HISTORY) for i in range(1, 6)]
        seen = positions[1]
        assert seen is not None
        recovery = await broker.recover(channel, seen, options=HISTORY)
        assert recovery.recovered
        assert offsets(recovery.publications) == [3, 4, 5]
        assert [p.data for p in recovery.publications] == [3, 4, 5]
        assert recovery.position == positions[-1]

    async def test_recover_from_lost_position(self, broker: Broker, channel: str) -> None:
        top = None
        for i in range(3):
            top = await broker.publish(channel, i, options=HISTORY)
        recovery = await broker.recover(channel, StreamPosition(1, "stale"), options=HISTORY)
        assert not recovery.recovered
        assert recovery.publications == []
        assert recovery.position == top

    async def test_recover_trimmed_position(self, broker: Broker, channel: str) -> None:
        small = ChannelOptions(history_size=2, history_ttl=300.0)
        first = await broker.publish(channel, 1, options=small)
        top = None
        for i in range(2, 6):
            top = await broker.publish(channel, i, options=small)
        assert first is not None
        recovery = await broker.recover(channel, first, options=small)
        assert not recovery.recovered
        assert recovery.publications == []
        assert recovery.position == top

    async def test_resubscribing_while_publishing_delivers_each_once(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        """A subscriber that recovers in a loop while a fast publisher runs sees
        every offset once: the reply's publications, then live ones above its
        position (the node's hub over this engine, as a subscribe does it)."""
        hub = Hub(broker, Stats())
        handler.forward = hub
        stop = asyncio.Event()
        big = ChannelOptions(history_size=100_000, history_ttl=300.0)  # never outrun here

        async def publish() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                await broker.publish(channel, i, options=big)
                await asyncio.sleep(0)  # an engine that never suspends must not starve the test

        await broker.publish(channel, 0, options=big)  # the history (and its epoch) exists
        publisher = asyncio.create_task(publish())
        try:
            since = (await broker.history(channel, options=big, limit=0)).position
            seen: list[int] = []
            for _ in range(40):
                sub = Subscriber()
                await hub.acquire(channel)
                hub.buffer(sub, channel)  # type: ignore[arg-type]
                recovery = await broker.recover(channel, since, options=big)
                assert recovery.recovered, (since, recovery.position)
                top = recovery.position
                hub.activate(sub, channel, top.offset, top.epoch)  # type: ignore[arg-type]
                await asyncio.sleep(0.005)
                hub.release(sub, channel)  # type: ignore[arg-type]
                got = [p.offset for p in recovery.publications] + sub.offsets
                assert len(got) == len(set(got)), f"duplicates after recovery: {got}"
                seen += got  # type: ignore[arg-type]
                if sub.offsets:
                    top = StreamPosition(sub.offsets[-1], top.epoch)
                since = top
        finally:
            stop.set()
            await publisher
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        await asyncio.sleep(0)  # the hub's background unsubscribe

    # -- presence ------------------------------------------------------------

    async def test_presence_add_list_remove(self, broker: Broker, channel: str) -> None:
        alice = ClientInfo("c-alice", "alice", {"name": "Alice", "tags": ["a", "b"], "n": 1})
        bob = ClientInfo("c-bob", "bob")
        assert await broker.presence(channel) == {}
        await broker.add_presence(channel, alice)
        await broker.add_presence(channel, bob)
        assert await broker.presence(channel) == {"c-alice": alice, "c-bob": bob}
        await broker.remove_presence(channel, "c-alice")
        assert await broker.presence(channel) == {"c-bob": bob}
        await broker.remove_presence(channel, "c-bob")
        await broker.remove_presence(channel, "c-nobody")  # unknown: no error
        assert await broker.presence(channel) == {}

    async def test_presence_is_per_channel_and_updates(self, broker: Broker, channel: str) -> None:
        other = channel + ".other"
        await broker.add_presence(channel, ClientInfo("c1", "u1", "old"))
        await broker.add_presence(channel, ClientInfo("c1", "u1", "new"))
        await broker.add_presence(other, ClientInfo("c2", "u2"))
        assert await broker.presence(channel) == {"c1": ClientInfo("c1", "u1", "new")}
        assert await broker.presence(other) == {"c2": ClientInfo("c2", "u2")}
        await broker.remove_presence(other, "c2")

    async def test_join_and_leave_reach_subscriber(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        info = ClientInfo("c-1", "user-1", {"k": "v"})
        await broker.subscribe(channel)
        await broker.publish_join(channel, info)
        await broker.publish_leave(channel, info)
        joins = await handler.wait_for(1, kind="joins")
        leaves = await handler.wait_for(1, kind="leaves")
        assert [(c, i.client, i.user) for c, i in joins] == [(channel, "c-1", "user-1")]
        assert [(c, i.client, i.user) for c, i in leaves] == [(channel, "c-1", "user-1")]

    async def test_join_and_leave_need_a_subscription(
        self, broker: Broker, handler: RecordingHandler, channel: str
    ) -> None:
        info = ClientInfo("c-1", "user-1")
        await broker.publish_join(channel, info)
        await broker.publish_leave(channel, info)
        await handler.settle()
        assert handler.joins == [] and handler.leaves == []

    # -- lifecycle -----------------------------------------------------------

    async def test_healthy_and_close_is_idempotent(self, broker: Broker) -> None:
        assert broker.healthy
        await broker.close()
        await broker.close()


class RedisContract(BrokerContract):
    """The contract over a Redis engine (one Redis, Sentinel, a Redis Cluster):
    history state is the channel's keys, which share one slot."""

    async def stored(self, broker: Broker, channel: str) -> bool:
        from hubbub.cluster.redis import RedisBroker

        assert isinstance(broker, RedisBroker)
        keys = broker.keys.history_keys(channel)  # one slot: one EXISTS
        return bool(await broker.backend_for(channel).call(b"EXISTS", *keys))

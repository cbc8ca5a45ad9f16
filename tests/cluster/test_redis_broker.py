"""The Redis engine against real redis-server processes: the broker contract,
then what only a cluster has (several nodes, shards, faults, the key layout)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgpack
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from hubbub.cluster.broker import ChannelOptions, ClientInfo
from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.redis import RedisBroker
from hubbub.cluster.redis_layout import Keys
from hubbub.cluster.redis_scripts import ALL as ALL_SCRIPTS
from hubbub.cluster.sharding import shard_of
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.messages import StreamPosition
from tests.cluster.contract import HISTORY, NO_HISTORY, RecordingHandler, RedisContract, offsets
from tests.procs import RedisProc, start_redis

#: Generous bound on "fails fast": only a guard against hanging, never a benchmark.
HANG_GUARD = 3.0


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisProc]:
    """One redis-server for the tests that do not hurt it (channels are per test)."""
    server = start_redis()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def broker(handler: RecordingHandler, shared_redis: RedisProc) -> AsyncIterator[RedisBroker]:
    engine = RedisBroker([shared_redis.url], node_id="contract")
    await engine.start(handler)
    yield engine
    await engine.close()


class TestRedisContract(RedisContract):
    pass


@pytest.fixture
def channel() -> str:
    return f"chat:{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def nodes() -> AsyncIterator[Callable[..., RedisBroker]]:
    """Make brokers ("nodes"); each is closed after the test. Use ``await start(b, h)``."""
    made: list[RedisBroker] = []

    def make(urls: list[str], node_id: str = "") -> RedisBroker:
        engine = RedisBroker(urls, node_id=node_id or uuid.uuid4().hex[:8])
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


async def started(engine: RedisBroker, handler: RecordingHandler | None = None) -> RedisBroker:
    await engine.start(handler or RecordingHandler())
    return engine


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (a real process needs real time to notice)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest_asyncio.fixture
async def raw(shared_redis: RedisProc) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the engine wrote."""
    client = aioredis.Redis.from_url(shared_redis.url)
    yield client
    await client.aclose()


# -- two nodes ---------------------------------------------------------------------


async def test_two_nodes_deliver_each_others_publications_exactly_once(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    ha, hb = RecordingHandler(), RecordingHandler()
    a = await started(nodes([shared_redis.url]), ha)
    b = await started(nodes([shared_redis.url]), hb)
    await a.subscribe(channel)
    await b.subscribe(channel)
    sent = await asyncio.gather(
        *(
            (a if i % 2 else b).publish(channel, i, options=HISTORY, sender=ClientInfo("c", "u"))
            for i in range(100)
        )
    )
    assert sorted(p.offset for p in sent if p) == list(range(1, 101))
    for handler in (ha, hb):
        pubs = await handler.wait_for(100, timeout=5.0)
        await handler.settle()
        assert len(handler.publications) == 100
        assert offsets(pubs) == list(range(1, 101))  # one order for every node
        assert sorted(p.data for p in pubs) == list(range(100))
    assert [p.data for p in ha.publications] == [p.data for p in hb.publications]


async def test_settle_returns_after_every_accepted_publication_arrived(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    """Draining relies on it: once settle() returns, every publication Redis
    accepted before the call has been handed to the handler."""
    receiver_handler = RecordingHandler()
    receiver = await started(nodes([shared_redis.url]), receiver_handler)
    sender = await started(nodes([shared_redis.url]))
    await receiver.subscribe(channel)
    payload = b"x" * 16384  # large enough that the pub/sub stream lags the replies
    for round_ in range(3):
        await asyncio.gather(
            *(sender.publish(channel, payload, options=HISTORY) for _ in range(300))
        )
        await receiver.settle(timeout=5.0)
        # No waiting here: settle() itself must have waited.
        assert len(receiver_handler.publications) == 300 * (round_ + 1)
    await receiver.unsubscribe(channel)
    await receiver.settle(timeout=5.0)  # also answered with nothing subscribed


async def test_join_and_leave_cross_nodes(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    hb = RecordingHandler()
    a = await started(nodes([shared_redis.url]))
    b = await started(nodes([shared_redis.url]), hb)
    await b.subscribe(channel)
    info = ClientInfo("c-1", "alice", {"k": "v"})
    await a.publish_join(channel, info)
    await a.publish_leave(channel, info)
    (joined,) = await hb.wait_for(1, kind="joins")
    (left,) = await hb.wait_for(1, kind="leaves")
    assert joined == (channel, ClientInfo("c-1", "alice"))
    assert left == (channel, ClientInfo("c-1", "alice"))


async def test_recover_on_another_node(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    a = await started(nodes([shared_redis.url]))
    b = await started(nodes([shared_redis.url]))
    seen = None
    for i in range(1, 4):
        seen = await a.publish(channel, i, options=HISTORY)
    for i in range(4, 8):
        await a.publish(channel, i, options=HISTORY)
    assert seen is not None
    recovery = await b.recover(channel, seen, options=HISTORY)
    assert recovery.recovered
    assert offsets(recovery.publications) == [4, 5, 6, 7]
    assert [p.data for p in recovery.publications] == [4, 5, 6, 7]
    assert recovery.position == StreamPosition(7, seen.epoch)


async def test_presence_across_nodes_and_expiry_of_a_dead_node(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    a = nodes([shared_redis.url])
    a.presence_store.interval = 0.2  # entries live 3 heartbeats: 0.6 s
    await started(a)
    b = await started(nodes([shared_redis.url]))
    alice = ClientInfo("c-alice", "alice", {"name": "Alice"})
    await a.add_presence(channel, alice)
    await b.add_presence(channel, ClientInfo("c-bob", "bob"))
    assert set(await b.presence(channel)) == {"c-alice", "c-bob"}
    await asyncio.sleep(1.0)  # several TTLs: alive only thanks to the heartbeat
    assert (await b.presence(channel))["c-alice"] == alice
    await a.close()  # the node dies: its heartbeat stops, its entries stay in Redis
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while "c-alice" in await b.presence(channel):
        assert loop.time() < deadline, "a dead node's presence did not expire"
        await asyncio.sleep(0.1)
    # bob's node is alive (default heartbeat, 15 s TTL): still present.
    assert set(await b.presence(channel)) == {"c-bob"}


async def test_presence_comes_back_after_its_hash_is_lost(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], raw: aioredis.Redis, channel: str
) -> None:
    a = nodes([shared_redis.url])
    await started(a)
    await a.add_presence(channel, ClientInfo("c1", "u1"))
    await raw.delete(Keys().presence(channel))  # as after a Redis restart
    assert await a.presence(channel) == {}
    assert await a.presence_store.refresh() == 1  # one heartbeat
    assert set(await a.presence(channel)) == {"c1"}
    await a.remove_presence(channel, "c1")
    assert await a.presence_store.refresh() == 0
    assert await a.presence(channel) == {}


# -- layout and scripts ------------------------------------------------------------


async def test_key_layout(broker: RedisBroker, raw: aioredis.Redis, channel: str) -> None:
    keys = Keys()
    options = ChannelOptions(history_size=2, history_ttl=60.0)
    for i in range(3):
        position = await broker.publish(channel, i, options=options)
    assert position is not None
    stream, meta = f"hubbub:{{{channel}}}:stream", f"hubbub:{{{channel}}}:meta"
    assert (stream, meta) == keys.history_keys(channel)
    assert await raw.type(stream) == b"stream" and await raw.type(meta) == b"hash"
    entries: Any = await raw.xrange(stream)  # redis-py's types are loose
    assert [e[0] for e in entries] == [b"2-0", b"3-0"]  # id = offset, capped at history_size
    assert msgpack.unpackb(entries[0][1][b"d"]) == {"d": 1}
    assert await raw.hgetall(meta) == {b"epoch": position.epoch.encode(), b"top": b"3"}
    for key in (stream, meta):
        assert 0 < await raw.pttl(key) <= 60_000
    await broker.add_presence(channel, ClientInfo("c1", "u1", [1]))
    value: Any = await raw.hget(f"hubbub:{{{channel}}}:presence", "c1")
    expires, _, packed = value.partition(b":")
    assert int(expires) > 0 and msgpack.unpackb(packed) == {"u": "u1", "i": [1]}
    assert keys.pubsub(channel) == f"hubbub:ch:{channel}".encode()


async def test_published_message_carries_offset_and_epoch(
    broker: RedisBroker, raw: aioredis.Redis, channel: str
) -> None:
    """The script appends ``o`` and ``e`` to the envelope: one msgpack map."""
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"hubbub:ch:{channel}")
    confirmation = await pubsub.get_message(timeout=2.0)
    assert confirmation is not None and confirmation["type"] == "subscribe"
    position = await broker.publish(
        channel, {"x": b"\x00"}, options=HISTORY, sender=ClientInfo("c1", "u1")
    )
    await broker.publish(channel, "plain", options=NO_HISTORY)
    first = await pubsub.get_message(timeout=2.0)
    second = await pubsub.get_message(timeout=2.0)
    await pubsub.aclose()
    assert position is not None and first is not None and second is not None
    assert msgpack.unpackb(first["data"]) == {
        "d": {"x": b"\x00"},
        "f": ["c1", "u1"],
        "o": 1,
        "e": position.epoch,
    }
    assert msgpack.unpackb(second["data"]) == {"d": "plain"}


async def test_publish_without_history_writes_no_keys(
    broker: RedisBroker, raw: aioredis.Redis, channel: str
) -> None:
    assert await broker.publish(channel, "x", options=NO_HISTORY) is None
    assert await raw.keys(f"*{channel}*") == []


async def test_scripts_are_reloaded_after_script_flush(
    broker: RedisBroker, raw: aioredis.Redis, handler: RecordingHandler, channel: str
) -> None:
    await broker.subscribe(channel)
    await broker.publish(channel, 1, options=HISTORY)
    await raw.script_flush()  # as a restarted Redis: EVALSHA answers NOSCRIPT
    assert await raw.script_exists(*(s.sha for s in ALL_SCRIPTS)) == [False] * len(ALL_SCRIPTS)
    position = await broker.publish(channel, 2, options=HISTORY)
    assert position is not None and position.offset == 2
    assert offsets((await broker.history(channel, options=HISTORY)).publications) == [1, 2]
    await broker.add_presence(channel, ClientInfo("c", "u"))
    assert set(await broker.presence(channel)) == {"c"}
    assert offsets(await handler.wait_for(2)) == [1, 2]


async def test_history_expires_with_its_epoch(broker: RedisBroker, channel: str) -> None:
    short = ChannelOptions(history_size=10, history_ttl=0.2)
    first = await broker.publish(channel, 1, options=short)
    assert first is not None
    await asyncio.sleep(0.6)  # well past the TTL: Redis dropped stream and meta together
    after = await broker.history(channel, options=short)
    assert after.publications == [] and after.position.offset == 0
    assert after.position.epoch != first.epoch
    with pytest.raises(PositionGone):
        await broker.history(channel, options=short, since=first)


async def test_many_publishes_in_flight(
    broker: RedisBroker, handler: RecordingHandler, channel: str
) -> None:
    channels = [f"{channel}.{i}" for i in range(20)]
    for name in channels:
        await broker.subscribe(name)
    results = await asyncio.gather(
        *(broker.publish(name, i, options=HISTORY) for i in range(25) for name in channels)
    )
    assert all(r is not None for r in results)
    pubs = await handler.wait_for(500, timeout=10.0)
    for name in channels:
        assert offsets([p for p in pubs if p.channel == name]) == list(range(1, 26))
    assert handler.gaps == []


async def test_offset_jump_is_reported_as_a_gap(
    broker: RedisBroker, handler: RecordingHandler, raw: aioredis.Redis, channel: str
) -> None:
    await broker.subscribe(channel)
    await broker.publish(channel, 1, options=HISTORY)
    await handler.wait_for(1)
    # Publications this node never received (as if its pub/sub connection missed them).
    await raw.hincrby(Keys().meta(channel), "top", 3)
    await broker.publish(channel, 5, options=HISTORY)
    pubs = await handler.wait_for(2)
    assert offsets(pubs) == [1, 5]
    assert handler.gaps == [channel]


async def test_subscribe_unsubscribe_subscribe_in_flight(
    broker: RedisBroker, handler: RecordingHandler, raw: aioredis.Redis, channel: str
) -> None:
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE all in flight: both subscribes
    complete, the channel ends subscribed once, and delivery is exactly once."""
    await broker.subscribe(channel)
    await broker.unsubscribe(channel)  # UNSUBSCRIBE sent, not awaited
    await broker.subscribe(channel)
    other = channel + ".racing"
    first = asyncio.ensure_future(broker.subscribe(other))
    await asyncio.sleep(0)  # its SUBSCRIBE is queued
    await broker.unsubscribe(other)
    second = asyncio.ensure_future(broker.subscribe(other))
    await asyncio.gather(first, second)
    for name in (channel, other):
        await broker.publish(name, name, options=HISTORY)
    await handler.wait_for(2)
    await handler.settle()
    assert sorted(p.data for p in handler.publications) == sorted([channel, other])
    counts: Any = await raw.pubsub_numsub(f"hubbub:ch:{channel}", f"hubbub:ch:{other}")
    assert [n for _, n in counts] == [1, 1]
    await broker.unsubscribe(other)
    await broker.publish(other, "after", options=HISTORY)
    await handler.settle()
    assert len(handler.publications) == 2


async def test_subscribe_returns_only_once_redis_confirmed(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    """While Redis holds every command (CLIENT PAUSE), a subscribe cannot be
    confirmed, so it must not return; it does once Redis confirms."""
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        subscribing = asyncio.ensure_future(node.subscribe(channel))
        await asyncio.sleep(0.3)  # well inside the pause
        assert not subscribing.done()
        async with asyncio.timeout(HANG_GUARD + 2):
            await subscribing
        counts: Any = await client.pubsub_numsub(f"hubbub:ch:{channel}")
        assert counts[0][1] == 1
    finally:
        await client.aclose()
    await eventually(lambda: node.healthy)  # the pause also held the health check
    await node.publish(channel, "x", options=HISTORY)
    assert [p.data for p in await handler.wait_for(1)] == ["x"]


# -- shards ------------------------------------------------------------------------


async def test_sharding_spreads_channels_and_nodes_agree(
    redis_factory: Callable[[], RedisProc], nodes: Callable[..., RedisBroker]
) -> None:
    servers = [redis_factory(), redis_factory()]
    urls = [s.url for s in servers]
    ha, hb = RecordingHandler(), RecordingHandler()
    a = await started(nodes(urls), ha)
    b = await started(nodes(urls), hb)
    channels = [f"chat:shard-{i}" for i in range(40)]
    owners = [shard_of(c, 2) for c in channels]
    assert set(owners) == {0, 1}  # both shards get channels
    assert [a.shard_for(c).index for c in channels] == owners
    assert [b.shard_for(c).index for c in channels] == owners
    for name in channels:
        await b.subscribe(name)
    for i, name in enumerate(channels):
        await a.publish(name, i, options=HISTORY)
    pubs = await hb.wait_for(40, timeout=5.0)
    assert sorted(p.data for p in pubs) == list(range(40))
    clients = [aioredis.Redis.from_url(url) for url in urls]
    try:
        for name, owner in zip(channels, owners, strict=True):
            for index, client in enumerate(clients):
                assert await client.exists(Keys().meta(name)) == (index == owner)
        # The pub/sub subscriptions of the channels are on their own shards too.
        for index, client in enumerate(clients):
            names: Any = await client.pubsub_channels("hubbub:ch:*")
            subscribed = {c.decode() for c in names}
            expected = {
                f"hubbub:ch:{c}" for c, o in zip(channels, owners, strict=True) if o == index
            }
            assert subscribed == expected
    finally:
        for client in clients:
            await client.aclose()


async def test_a_channel_that_moves_shard_gets_a_new_epoch(
    redis_factory: Callable[[], RedisProc], nodes: Callable[..., RedisBroker]
) -> None:
    """Adding a shard moves some channels; their history stays behind (not
    migrated), so the epoch a client holds is unknown on the new owner and it
    gets ``recovered: false`` (docs/clustering.md)."""
    first, second = redis_factory(), redis_factory()
    moving = next(f"chat:move-{i}" for i in range(1000) if shard_of(f"chat:move-{i}", 2) == 1)
    staying = next(f"chat:stay-{i}" for i in range(1000) if shard_of(f"chat:stay-{i}", 2) == 0)
    one = await started(nodes([first.url]))
    two = await started(nodes([first.url, second.url]))
    old: dict[str, StreamPosition] = {}
    for name in (moving, staying):
        await one.publish(name, "before", options=HISTORY)
        position = await one.publish(name, "before", options=HISTORY)
        assert position is not None
        old[name] = position
    moved = await two.recover(moving, old[moving], options=HISTORY)
    assert not moved.recovered
    assert moved.position.offset == 0 and moved.position.epoch != old[moving].epoch
    kept = await two.recover(staying, old[staying], options=HISTORY)
    assert kept.recovered and kept.position == old[staying]


# -- faults ------------------------------------------------------------------------


async def test_redis_killed_fails_fast_and_reports_unhealthy(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    await node.subscribe(channel)
    assert node.healthy
    redis_server.kill()
    loop = asyncio.get_running_loop()
    for attempt in range(3):
        began = loop.time()
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(HANG_GUARD):
                await node.publish(channel, attempt, options=HISTORY)
        assert loop.time() - began < HANG_GUARD
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(HANG_GUARD):
            await node.subscribe(channel + ".new")
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(HANG_GUARD):
            await node.history(channel, options=HISTORY)
    await eventually(lambda: not node.healthy, timeout=HANG_GUARD)
    await node.unsubscribe(channel)  # never raises, even while Redis is down


async def test_redis_restart_resubscribes_and_reports_the_gap(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    other = channel + ".nohistory"
    await node.subscribe(channel)
    await node.subscribe(other)
    before = await node.publish(channel, "before", options=HISTORY)
    await handler.wait_for(1)
    redis_server.kill()
    await eventually(lambda: not node.healthy)
    redis_server.start()  # same port, empty: history and subscriptions are gone
    await eventually(lambda: node.healthy)
    await handler.wait_for(2, kind="gaps")
    assert sorted(handler.gaps) == sorted([channel, other])
    after = await node.publish(channel, "after", options=HISTORY)
    await node.publish(other, "plain", options=NO_HISTORY)
    pubs = await handler.wait_for(3)
    assert [p.data for p in pubs] == ["before", "after", "plain"]
    assert before is not None and after is not None
    assert after.offset == 1 and after.epoch != before.epoch  # a new history
    recovery = await node.recover(channel, before, options=HISTORY)
    assert not recovery.recovered and recovery.position == after
    assert node.reader_restarts == 0


async def test_a_gap_held_until_the_shard_is_up_holds_its_live_publications_back(
    shared_redis: RedisProc, nodes: Callable[..., RedisBroker], raw: aioredis.Redis, channel: str
) -> None:
    """Re-subscribed before the health check sees Redis again (behind Sentinel
    the pub/sub connection may reach the new primary first), the gap is told
    once the shard is up; a publication of the same history arriving meanwhile
    is not delivered (it would move the subscribers' position past the gap; it
    comes from history with the rest), one of a new history is (recovering
    across it is refused anyway), and neither is reported as a second gap."""
    handler = RecordingHandler()
    node = await started(nodes([shared_redis.url]), handler)
    publisher = await started(nodes([shared_redis.url]))
    await node.subscribe(channel)
    await publisher.publish(channel, 1, options=HISTORY)
    await handler.wait_for(1)
    shard = node.shards[0]
    await shard.health.stop()  # the test says when the shard is seen up again
    shard._mark_down()
    await raw.client_kill_filter(_type="pubsub", skipme=True)
    await eventually(lambda: node.shards[0].subscriber.reconnects == 1)
    await eventually(lambda: Keys().pubsub(channel) in shard.subscriber.routes)
    await publisher.publish(channel, 2, options=HISTORY)  # PUBLISHed before it returns
    await asyncio.sleep(0.1)
    assert offsets(handler.publications) == [1] and handler.gaps == []
    await raw.delete(*Keys().history_keys(channel))  # as if Redis came back empty
    await publisher.publish(channel, "new", options=HISTORY)
    pubs = await handler.wait_for(2)
    assert [(p.data, p.offset) for p in pubs] == [(1, 1), ("new", 1)]
    assert pubs[1].epoch != pubs[0].epoch and handler.gaps == []
    assert await shard.check_health()
    assert handler.gaps == [channel]
    await publisher.publish(channel, 3, options=HISTORY)
    pubs = await handler.wait_for(3)
    assert [(p.data, p.offset) for p in pubs][2:] == [(3, 2)] and handler.gaps == [channel]


async def test_reader_task_killed_is_restarted(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    await node.subscribe(channel)
    subscriber = node.shards[0].subscriber
    task = subscriber.reader.task
    assert task is not None
    task.cancel()
    await eventually(lambda: subscriber.reader.task is not task and subscriber.connected)
    assert node.reader_restarts == 1
    await handler.wait_for(1, kind="gaps")  # it may have missed publications meanwhile
    assert handler.gaps == [channel]
    await node.publish(channel, "still delivered", options=HISTORY)
    (pub,) = await handler.wait_for(1)
    assert pub.data == "still delivered"


async def test_one_shard_down_leaves_the_other_working(
    redis_factory: Callable[[], RedisProc], nodes: Callable[..., RedisBroker]
) -> None:
    servers = [redis_factory(), redis_factory()]
    node = await started(nodes([s.url for s in servers]))
    on = {shard_of(f"chat:s-{i}", 2): f"chat:s-{i}" for i in range(100)}
    servers[1].kill()
    await eventually(lambda: not node.healthy)
    assert await node.publish(on[0], "ok", options=HISTORY) is not None
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(HANG_GUARD):
            await node.publish(on[1], "refused", options=HISTORY)
    servers[1].start()
    await eventually(lambda: node.healthy)
    assert await node.publish(on[1], "back", options=HISTORY) is not None


async def test_starts_while_redis_is_down_and_recovers(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    redis_server.kill()
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    assert not node.healthy
    with pytest.raises(BrokerUnavailable):
        await node.publish(channel, "x", options=HISTORY)
    redis_server.start()
    await eventually(lambda: node.healthy)
    await node.subscribe(channel)
    await node.publish(channel, "x", options=HISTORY)
    assert [p.data for p in await handler.wait_for(1)] == ["x"]


async def test_close_fails_waiting_calls_and_is_final(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    node = await started(nodes([redis_server.url]))
    await node.close()
    assert not node.healthy
    with pytest.raises(BrokerUnavailable):
        await node.publish(channel, "x", options=HISTORY)
    await node.close()


def test_needs_a_url() -> None:
    with pytest.raises(ValueError):
        RedisBroker([], node_id="n")


async def test_commands_in_flight_are_bounded(broker: RedisBroker, channel: str) -> None:
    """DESIGN.md "Backpressure": a bounded queue to Redis, 503 when it is full."""
    await broker.publish(channel, 0, options=NO_HISTORY)  # the connection is open
    broker.shards[0].pipe.max_in_flight = 5
    results = await asyncio.gather(
        *(broker.publish(channel, i, options=HISTORY) for i in range(50)), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, StreamPosition)]
    refused = [r for r in results if isinstance(r, BrokerUnavailable)]
    assert len(accepted) == 5 and len(refused) == 45
    assert sorted(p.offset for p in accepted) == [1, 2, 3, 4, 5]
    assert await broker.publish(channel, "later", options=HISTORY) is not None


async def test_redis_that_stops_answering_fails_fast(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    """A hung Redis (SIGSTOP: connections stay open, nothing answers) is a
    partition, not a crash: commands must still fail within the guard."""
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    await node.subscribe(channel)
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(HANG_GUARD):
                await node.publish(channel, "stuck", options=HISTORY)
        await eventually(lambda: not node.healthy, timeout=HANG_GUARD)
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(HANG_GUARD):
                await node.publish(channel, "refused", options=HISTORY)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await eventually(lambda: node.healthy)
    position = await node.publish(channel, "after", options=HISTORY)
    assert position is not None
    # "stuck" may or may not have been applied (a 503 on a silent Redis cannot
    # know); "after" is delivered either way.
    await eventually(lambda: "after" in [p.data for p in handler.publications])


# -- node registry -----------------------------------------------------------------


async def test_node_registry(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    a = nodes([redis_server.url], node_id="node-a")
    a.registry.interval = 0.2  # its entry lives 0.6 s after its last heartbeat
    await started(a)
    b = await started(nodes([redis_server.url], node_id="node-b"))
    c = await started(nodes([redis_server.url], node_id="node-c"))
    await b.subscribe(channel)
    await b.registry.beat()
    listed = await c.nodes()
    assert [n["node"] for n in listed] == ["node-a", "node-b", "node-c"]
    entry_b = listed[1]
    assert entry_b["channels"] == 1 and entry_b["started"] <= entry_b["updated"]
    assert entry_b["shards"] == [{"shard": b.shards[0].label, "up": True}]
    await asyncio.sleep(1.0)  # several TTLs of a: alive thanks to its heartbeat
    assert "node-a" in [n["node"] for n in await c.nodes()]
    await b.close()  # a clean stop leaves at once
    assert [n["node"] for n in await c.nodes()] == ["node-a", "node-c"]
    await a.registry.heartbeat.stop()  # a dies: no heartbeat, no goodbye
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while "node-a" in [n["node"] for n in await c.nodes()]:
        assert loop.time() < deadline, "a dead node stayed in the registry"
        await asyncio.sleep(0.1)
    assert [n["node"] for n in await c.nodes()] == ["node-c"]


async def test_a_restarted_redis_has_the_scripts_before_the_first_command(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    """A new command connection loads the scripts before anything else, so no
    EVALSHA meets NOSCRIPT after a restart. Its fallback (EVAL, sent once the
    NOSCRIPT reply is read) ran a publish after later ones of the same
    connection: the soak saw one publisher's stream reordered after Redis came
    back (the offsets follow the order Redis ran them in)."""
    handler = RecordingHandler()
    node = await started(nodes([redis_server.url]), handler)
    await node.publish(channel, 0, options=HISTORY)
    redis_server.kill()
    await eventually(lambda: not node.healthy)
    redis_server.start()  # empty: no scripts cached
    await eventually(lambda: node.healthy)
    positions = await asyncio.gather(
        *(node.publish(channel, n, options=HISTORY) for n in range(1, 21))
    )
    assert [p.offset for p in positions if p is not None] == list(range(1, 21))
    history = await node.history(channel, options=HISTORY)
    assert [p.data for p in history.publications] == list(range(1, 21))
    await node.add_presence(channel, ClientInfo("c", "u"))
    assert set(await node.presence(channel)) == {"c"}
    raw = aioredis.from_url(redis_server.url)
    try:
        errors = await raw.info("errorstats")
        assert "errorstat_NOSCRIPT" not in errors, errors
    finally:
        await raw.aclose()


async def test_publishes_keep_their_order_while_the_connection_is_reopened(
    redis_server: RedisProc, nodes: Callable[..., RedisBroker], channel: str
) -> None:
    """Commands made while the command connection is being opened go out in the
    order they were made: one that came once the connection was there had
    overtaken those still waiting for it (a publisher's stream reordered
    after a Redis restart, in the soak)."""
    node = await started(nodes([redis_server.url]), RecordingHandler())
    await node.publish(channel, 0, options=HISTORY)
    node.shards[0].pipe.abort("test: dropped")
    await eventually(lambda: node.healthy)
    tasks = []
    for n in range(1, 41):  # a steady stream, one per loop iteration
        tasks.append(asyncio.ensure_future(node.publish(channel, n, options=HISTORY)))
        await asyncio.sleep(0)
    positions = await asyncio.gather(*tasks)
    assert [p.offset for p in positions if p is not None] == list(range(2, 42))

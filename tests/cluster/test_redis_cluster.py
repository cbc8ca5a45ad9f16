"""The Redis Cluster engine (``redis+cluster://``): the broker contract over a
real 3-primary cluster, the key layout in one slot per channel, sharded
pub/sub, and what the URL may say."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from hubbub.cluster.factory import check_redis_urls, make_broker
from hubbub.cluster.redis_cluster import ClusterBroker, ClusterTarget, parse_cluster_url, slot_of
from hubbub.cluster.redis_layout import SlotKeys
from hubbub.cluster.redis_scripts import PUBLISH, PUBLISH_SHARDED
from tests.cluster.contract import HISTORY, RecordingHandler, RedisContract
from tests.redis_ha import ClusterGroup


@pytest_asyncio.fixture
async def broker(
    handler: RecordingHandler, redis_cluster: ClusterGroup
) -> AsyncIterator[ClusterBroker]:
    engine = ClusterBroker(redis_cluster.url, node_id="contract-cluster")
    await engine.start(handler)
    yield engine
    await engine.close()


class TestClusterContract(RedisContract):
    pass


async def test_keys_and_sharded_channel_share_the_channel_slot(
    broker: ClusterBroker, handler: RecordingHandler, redis_cluster: ClusterGroup
) -> None:
    channels = [f"chat:slot-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]
    for name in channels:
        await broker.subscribe(name)
        await broker.publish(name, name, options=HISTORY)
    pubs = await handler.wait_for(30)
    assert sorted(p.data for p in pubs) == sorted(channels)
    assert len({broker.shard_for(c).label for c in channels}) == 3  # every primary has some
    keys = SlotKeys()
    for name in channels:
        slot = slot_of(name)
        for key in (*keys.history_keys(name), keys.presence(name), keys.pubsub(name)):
            assert slot_of_key(key) == slot
        assert keys.channel_of(keys.pubsub(name)) == name
    # Each primary holds exactly the sharded subscriptions of its own slots.
    for server in redis_cluster.primaries():
        raw = aioredis.Redis(port=server.port)
        try:
            names = {n.decode() for n in await raw.execute_command("PUBSUB", "SHARDCHANNELS")}
        finally:
            await raw.aclose()
        mine = {keys.pubsub(c).decode() for c in channels if _served_by(broker, c, server.port)}
        assert mine <= names and not (names & {keys.pubsub(c).decode() for c in channels} - mine)


async def test_a_sharded_pubsub_connection_per_primary_with_subscriptions(
    broker: ClusterBroker,
) -> None:
    assert broker.healthy and len(broker.shards) == 3
    assert not any(s.subscriber.connected for s in broker.shards)  # nothing subscribed yet
    channel = f"chat:lazy-{uuid.uuid4().hex[:8]}"
    await broker.subscribe(channel)
    owner = broker.shard_for(channel)
    assert [s.subscriber.connected for s in broker.shards] == [s is owner for s in broker.shards]
    assert broker.healthy


def _served_by(broker: ClusterBroker, channel: str, port: int) -> bool:
    return urlsplit(broker.shard_for(channel).url).port == port


def slot_of_key(key: str | bytes) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode() if isinstance(key, str) else key)


def test_cluster_url_and_factory() -> None:
    assert parse_cluster_url("redis+cluster://a:1,b:2") == ClusterTarget((("a", 1), ("b", 2)))
    assert parse_cluster_url("redis+cluster://:pw@a:1").password == "pw"
    for bad in ("redis+cluster://a", "redis+cluster://a:1/0", "redis+cluster://a:x"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    with pytest.raises(ValueError):  # a whole cluster: alone
        check_redis_urls(["redis+cluster://a:1", "redis://b:2/0"])
    assert isinstance(make_broker(["redis+cluster://a:1"], node_id="n"), ClusterBroker)
    assert PUBLISH_SHARDED.source == PUBLISH.source.replace("'PUBLISH'", "'SPUBLISH'")
    assert "SPUBLISH" in PUBLISH_SHARDED.source


async def test_a_slot_migrating_step_by_step(
    broker: ClusterBroker, handler: RecordingHandler, redis_cluster: ClusterGroup
) -> None:
    """The steps of a reshard, one at a time: while the slot is migrating and
    the channel's keys already left, commands follow ``ASK`` (history intact);
    once the slot is handed over, the old primary drops the subscription
    (``sunsubscribe``), the node subscribes on the new one and reports the
    gap, and commands follow ``MOVED``."""
    # Every node agrees on one slot map, every primary has its replica in sync
    # (a loaded machine may still be settling an earlier test's failover).
    await asyncio.to_thread(redis_cluster.wait_ok)
    channel = f"chat:migrating-{uuid.uuid4().hex[:8]}"
    slot = slot_of(channel)
    await broker.subscribe(channel)
    first = await broker.publish(channel, 1, options=HISTORY)
    assert first is not None
    source_id, source = redis_cluster.owner_of(slot)
    target_id, target = next(
        (i, p) for i, p in redis_cluster.primary_ports().items() if i != source_id
    )
    keys = SlotKeys()
    names = [*keys.history_keys(channel)]
    run = redis_cluster.run
    assert run(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id) == "OK"
    assert run(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id) == "OK"
    assert run(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *names) == "OK"

    second = await broker.publish(channel, 2, options=HISTORY)  # ASK → ASKING + EVALSHA
    assert second is not None and (second.offset, second.epoch) == (2, first.epoch)
    recovery = await broker.recover(channel, first, options=HISTORY)
    assert recovery.recovered and [p.data for p in recovery.publications] == [2]

    for port in (target, source, *redis_cluster.primary_ports().values()):
        run(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    await handler.wait_for(1, kind="gaps")  # sunsubscribe → subscribed on the target
    assert handler.gaps == [channel]
    assert _served_by(broker, channel, target)
    third = await broker.publish(channel, 3, options=HISTORY)
    assert third is not None and third.offset == 3
    await eventually_data(handler, 3)
    # 2 was SPUBLISHed on the target while the node listened on the source: the
    # gap its subscribers were told of, and recover from history.
    assert [p.data for p in handler.publications] == [1, 3]
    assert keys.pubsub(channel).decode() in redis_cluster.shard_channels(target_id)


async def eventually_data(handler: RecordingHandler, data: object) -> None:
    async with asyncio.timeout(5.0):
        while data not in [p.data for p in handler.publications]:
            await asyncio.sleep(0.01)


async def test_each_connected_primary_is_probed_in_a_slot_it_owns(
    redis_cluster: ClusterGroup,
) -> None:
    """The delivery probe of sharded pub/sub (cluster.redis_probe): an SPUBLISH
    reaches only the subscribers of the primary owning the slot, so each
    primary's probe channel hashes to one of its own slots; one that lands in
    another primary's slot (``MOVED``) is replaced by one that does not."""
    engine = ClusterBroker(
        redis_cluster.url, node_id="probed", probe_interval=0.1, probe_timeout=0.5
    )
    await engine.start(RecordingHandler())
    try:
        for i in range(30):  # every primary gets some
            await engine.subscribe(f"chat:probed-{uuid.uuid4().hex[:6]}-{i}")
        assert len(engine.shards) == 3 and all(s.subscriber.connected for s in engine.shards)
        for shard in engine.shards:
            rch = shard.subscriber.probe_channel
            assert rch is not None and rch.startswith(b"hubbub:probe:probed.")
            assert engine.owner(slot_of_key(rch)) is shard
        await eventually(
            lambda: all(s.subscriber.probe.last_round_trip is not None for s in engine.shards)
        )
        one, other = engine.shards[0], engine.shards[1]
        wrong = other.subscriber.probe_channel
        one.subscriber.set_probe_channel(wrong)  # SSUBSCRIBE and SPUBLISH get MOVED
        await eventually(
            lambda: (
                (rch := one.subscriber.probe_channel) not in (None, wrong)
                and engine.owner(slot_of_key(rch)) is one
            )
        )
        one.subscriber.probe.last_round_trip = None
        await eventually(lambda: one.subscriber.probe.last_round_trip is not None)
        assert [s.subscriber.probe.misses for s in engine.shards] == [0, 0, 0]
        assert engine.healthy
    finally:
        await engine.close()


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)

"""The Redis Cluster engine (``redis+cluster://``): the broker contract over a
real 3-primary cluster, the key layout in one slot per channel, sharded
pub/sub, and what the URL may say."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from hubbub.cluster.factory import check_redis_urls, make_broker
from hubbub.cluster.redis_cluster import ClusterBroker, ClusterTarget, parse_cluster_url, slot_of
from hubbub.cluster.redis_layout import SlotKeys
from hubbub.cluster.redis_scripts import PUBLISH, PUBLISH_SHARDED
from tests.cluster.contract import HISTORY, BrokerContract, RecordingHandler
from tests.redis_ha import ClusterGroup


@pytest_asyncio.fixture
async def broker(
    handler: RecordingHandler, redis_cluster: ClusterGroup
) -> AsyncIterator[ClusterBroker]:
    engine = ClusterBroker(redis_cluster.url, node_id="contract-cluster")
    await engine.start(handler)
    yield engine
    await engine.close()


class TestClusterContract(BrokerContract):
    pass


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


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


def _served_by(broker: ClusterBroker, channel: str, port: int) -> bool:
    return broker.shard_for(channel).url.endswith(f":{port}/0")


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

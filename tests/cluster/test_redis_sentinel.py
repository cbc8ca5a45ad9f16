"""The Redis engine behind Sentinel (``redis+sentinel://``): the broker
contract over a real Sentinel group, and what the URL may say."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hubbub.cluster.factory import check_redis_urls
from hubbub.cluster.redis import RedisBroker
from hubbub.cluster.redis_sentinel import SentinelTarget, parse_sentinel_url
from tests.cluster.contract import HISTORY, RecordingHandler, RedisContract
from tests.redis_ha import SentinelGroup


@pytest_asyncio.fixture
async def broker(
    handler: RecordingHandler, redis_sentinel: SentinelGroup
) -> AsyncIterator[RedisBroker]:
    engine = RedisBroker([redis_sentinel.url], node_id="contract-sentinel")
    await engine.start(handler)
    yield engine
    await engine.close()


class TestSentinelContract(RedisContract):
    pass


async def test_commands_go_to_the_primary_the_sentinels_name(
    broker: RedisBroker, redis_sentinel: SentinelGroup
) -> None:
    position = await broker.publish("chat:where", "x", options=HISTORY)
    assert position is not None
    primary = redis_sentinel.primary_port()
    assert broker.shards[0].pipe._session is not None
    assert broker.shards[0].pipe._session.conn.port == primary  # type: ignore[attr-defined]


def test_sentinel_url() -> None:
    assert parse_sentinel_url("redis+sentinel://h1:1,h2:2,[::1]:3/main") == SentinelTarget(
        sentinels=(("h1", 1), ("h2", 2), ("::1", 3)), master="main"
    )
    assert parse_sentinel_url(
        "redis+sentinel://u:p%40ss@h:26379/m/3?sentinel_password=s"
    ) == SentinelTarget(
        (("h", 26379),), "m", db=3, username="u", password="p@ss", sentinel_password="s"
    )
    for bad in (
        "redis+sentinel://h:1",  # no master name
        "redis+sentinel://h/m",  # no port
        "redis+sentinel://h:1/m/x",  # db not a number
        "redis+sentinel://h:1/m/0/extra",
    ):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)
    check_redis_urls(["redis+sentinel://h:1/m", "redis://h:6379/0"])  # shards may mix

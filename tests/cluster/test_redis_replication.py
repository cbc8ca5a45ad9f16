"""Publications acknowledged only once replicated (``?min_replicas=N``: Redis
``WAIT`` after the publish script), against real redis-server processes: a
lone primary refuses with 503 "not replicated", a primary with a replica
acknowledges, and the publications of one interval share one WAIT."""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from hubbub.client import Client, ReplyError
from hubbub.cluster.broker import ClientInfo
from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.factory import check_redis_urls
from hubbub.cluster.redis import RedisBroker
from hubbub.cluster.redis_cluster import parse_cluster_url
from hubbub.cluster.redis_conn import (
    AUTO_REPLICAS,
    NO_REPLICAS,
    Replication,
    endpoint,
    pack,
    replicas_in,
    split_replication,
)
from tests.cluster.contract import HISTORY, NO_HISTORY, RecordingHandler
from tests.procs import RedisProc, free_port, start_node, start_redis


def test_replication_parameters_of_each_scheme() -> None:
    plain = split_replication("redis://h:1/0", NO_REPLICAS)
    assert plain == ("redis://h:1/0", Replication(0, 500))
    assert split_replication("redis://h:1/0?min_replicas=2&replica_timeout_ms=50", NO_REPLICAS) == (
        "redis://h:1/0",
        Replication(2, 50),
    )
    # Other parameters stay for redis-py (or the sentinels).
    kept = split_replication("redis://h:1/0?min_replicas=1&db=2", NO_REPLICAS)[0]
    assert kept == "redis://h:1/0?db=2"
    assert endpoint("redis://h:1/0").replication == Replication(0)
    assert endpoint("redis://h:1/0").probe == pack(b"PING")
    auto = endpoint("redis://h:1/0?min_replicas=auto")
    assert auto.replication == Replication(1, auto=True) and auto.probe == pack(b"ROLE")
    sentinel = endpoint("redis+sentinel://h:1,h:2/m?sentinel_password=s")
    assert sentinel.replication == AUTO_REPLICAS and sentinel.probe == pack(b"ROLE")
    strict = endpoint("redis+sentinel://h:1/m?min_replicas=1")
    assert strict.replication == Replication(1) and strict.probe == pack(b"ROLE")
    assert endpoint("redis+sentinel://h:1/m?min_replicas=0").replication == Replication(0)
    assert parse_cluster_url("redis+cluster://h:1").replication == AUTO_REPLICAS
    assert parse_cluster_url(
        "redis+cluster://h:1,h:2?replica_timeout_ms=200"
    ).replication == Replication(1, 200, auto=True)
    assert AUTO_REPLICAS.query == "min_replicas=auto&replica_timeout_ms=500"
    for bad in ("min_replicas=-1", "min_replicas=x", "replica_timeout_ms=0", "min_replicas="):
        with pytest.raises(ValueError, match="must be a whole number"):
            check_redis_urls([f"redis://h:1/0?{bad}"])
    with pytest.raises(ValueError, match="replica_timeout_ms"):  # WAIT 0 would wait forever
        check_redis_urls(["redis+cluster://h:1?replica_timeout_ms=100000"])


def test_auto_waits_for_one_replica_when_the_primary_lists_one_that_acknowledged() -> None:
    assert AUTO_REPLICAS.wanted(0) == 0 and AUTO_REPLICAS.wanted(2) == 1
    assert Replication(2).wanted(0) == 2  # a number is strict
    primary = [b"master", 3129659, [[b"127.0.0.1", b"9001", b"3129242"]]]
    assert replicas_in(primary) == 1
    syncing = [b"master", 10, [[b"127.0.0.1", b"9001", b"0"], [b"127.0.0.1", b"9002", b"9"]]]
    assert replicas_in(syncing) == 1  # offset 0: its first sync, WAIT cannot count it yet
    assert replicas_in([b"master", 0, []]) == 0
    assert replicas_in([b"slave", b"127.0.0.1", 9000, b"connected", 10]) == 0
    assert replicas_in(b"PONG") == 0


@pytest.fixture(scope="module")
def lone() -> Iterator[RedisProc]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicated() -> Iterator[RedisProc]:
    """A primary with one replica, in sync."""
    primary = start_redis()
    replica = RedisProc(
        free_port(),
        tempfile.mkdtemp(prefix="hubbub-redis-"),
        args=("--replicaof", "127.0.0.1", str(primary.port), "--repl-diskless-sync-delay", "0"),
    )
    replica.start()
    deadline = time.monotonic() + 10
    while "master_link_status:up" not in _info(replica.port, "replication"):
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    yield primary
    replica.stop()
    primary.stop()


def _info(port: int, section: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "INFO", section], capture_output=True, text=True, timeout=5
    )
    return out.stdout


def _wait_calls(port: int) -> int:
    found = re.search(r"cmdstat_wait:calls=(\d+)", _info(port, "commandstats"))
    return int(found.group(1)) if found else 0


@pytest_asyncio.fixture
async def make() -> AsyncIterator[Callable[[str], Awaitable[RedisBroker]]]:
    """Start brokers on a URL; each is closed after the test."""
    made: list[RedisBroker] = []

    async def start(url: str) -> RedisBroker:
        engine = RedisBroker([url], node_id=uuid.uuid4().hex[:8])
        made.append(engine)
        await engine.start(RecordingHandler())
        return engine

    yield start
    for engine in made:
        await engine.close()


async def test_no_replica_refuses_with_503_and_writes_that_need_none_go_on(
    lone: RedisProc, make: Callable[[str], Awaitable[RedisBroker]]
) -> None:
    broker = await make(f"{lone.url}?min_replicas=1&replica_timeout_ms=50")
    channel = f"chat:{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="not replicated: 0 of 1 replicas") as caught:
        await broker.publish(channel, "x", options=HISTORY)
    assert caught.value.code == 503
    assert time.monotonic() - started < 1.0  # WAIT's timeout, not a hang
    # What is not history does not wait: join/leave, presence, a publication
    # without history, reads.
    info = ClientInfo("c-1", "u-1")
    await broker.publish(channel, "y", options=NO_HISTORY)
    await broker.publish_join(channel, info)
    await broker.add_presence(channel, info)
    assert set(await broker.presence(channel)) == {"c-1"}
    history = await broker.history(channel, options=HISTORY)
    assert history.position.offset == 1  # written on the primary: the 503 says "unknown"
    # The same server with min_replicas=0 (plain redis:// default) acknowledges.
    plain = await make(lone.url)
    position = await plain.publish(channel, "z", options=HISTORY)
    assert position is not None and position.offset == 2


async def test_a_replica_acknowledges_and_an_interval_shares_one_wait(
    replicated: RedisProc, make: Callable[[str], Awaitable[RedisBroker]]
) -> None:
    broker = await make(f"{replicated.url}?min_replicas=1")
    channel = f"chat:{uuid.uuid4().hex}"
    position = await broker.publish(channel, "first", options=HISTORY)
    assert position is not None and position.offset == 1
    before = _wait_calls(replicated.port)
    count = 300
    positions = await asyncio.gather(
        *(broker.publish(channel, i, options=HISTORY) for i in range(count))
    )
    assert sorted(p.offset for p in positions if p is not None) == list(range(2, count + 2))
    waits = _wait_calls(replicated.port) - before
    assert 1 <= waits <= 3, waits  # one WAIT on the wire at a time, the rest share the next
    # Two replicas asked, one there: refused.
    strict = await make(f"{replicated.url}?min_replicas=2&replica_timeout_ms=50")
    with pytest.raises(BrokerUnavailable, match="not replicated: 1 of 2 replicas"):
        await strict.publish(channel, "two", options=HISTORY)


async def test_auto_acknowledges_alone_without_a_replica_and_waits_with_one(
    lone: RedisProc, replicated: RedisProc, make: Callable[[str], Awaitable[RedisBroker]]
) -> None:
    """``min_replicas=auto`` (the Sentinel and Cluster default): a primary with no
    replica (a promoted one whose old primary died) goes on acknowledging; one
    with a replica acknowledges once WAIT counted it."""
    channel = f"chat:{uuid.uuid4().hex}"
    alone = await make(f"{lone.url}?min_replicas=auto")
    before = _wait_calls(lone.port)
    positions = [await alone.publish(channel, i, options=HISTORY) for i in range(3)]
    assert [p.offset for p in positions if p is not None] == [1, 2, 3]
    assert _wait_calls(lone.port) == before  # nobody to wait for
    paired = await make(f"{replicated.url}?min_replicas=auto")
    assert paired.shards[0].pipe.replicas_seen == 1  # the health check's ROLE
    before = _wait_calls(replicated.port)
    position = await paired.publish(channel, "kept", options=HISTORY)
    assert position is not None and position.offset == 1
    assert _wait_calls(replicated.port) == before + 1


async def test_node_answers_503_not_replicated(lone: RedisProc) -> None:
    node = start_node(
        "[namespaces.chat]\nhistory_size = 10\n",
        redis=[f"{lone.url}?min_replicas=1&replica_timeout_ms=20"],
    )
    try:
        async with Client(node.tcp_url) as client:
            with pytest.raises(ReplyError) as caught:
                await client.publish(f"chat:{uuid.uuid4().hex}", "x")
        assert caught.value.code == 503
        assert "not replicated" in str(caught.value)
    finally:
        node.stop()

"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.procs import NodeProc, RedisProc, start_node, start_redis
from tests.redis_ha import ClusterGroup, SentinelGroup


@pytest.fixture
def node_factory() -> Iterator[Callable[..., NodeProc]]:
    """Start ``hubbub serve`` processes; all are stopped after the test."""
    nodes: list[NodeProc] = []

    def factory(config: str | None = None, **kwargs: Any) -> NodeProc:
        node = start_node(config, **kwargs)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()


@pytest.fixture
def node(node_factory: Callable[..., NodeProc]) -> NodeProc:
    """One node on the in-memory broker with history and presence in ``chat``."""
    return node_factory(
        "[namespaces.chat]\nhistory_size = 100\npresence = true\njoin_leave = true\n"
    )


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], RedisProc]]:
    servers: list[RedisProc] = []

    def factory() -> RedisProc:
        server = start_redis()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: Callable[[], RedisProc]) -> RedisProc:
    return redis_factory()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A Sentinel group (1 primary, 2 replicas, 3 sentinels) shared by the session."""
    group = SentinelGroup()
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterGroup]:
    """A Redis Cluster (3 primaries, 3 replicas) shared by the session."""
    group = ClusterGroup()
    try:
        group.start()
        yield group
    finally:
        group.stop()

"""A shard behind Redis Sentinel: ``redis+sentinel://H1:P1,H2:P2/MASTER[/DB]``.

The node never stores the primary's address: every connection it opens (the
command pipe, the pub/sub connection, the health check) first asks the
sentinels where the primary of ``MASTER`` is, with redis-py's
:class:`~redis.asyncio.sentinel.Sentinel` (which skips a sentinel that is down
and a primary the sentinels see as down), then connects there. A failover
therefore looks to the engine like a Redis restart on a new address: the
connections to the old primary break, the shard is down (503, ``/readyz``
503) for as long as no sentinel names a reachable primary, and the health
check's next success marks it up, wakes the pub/sub reader, which
re-subscribes every channel and reports the gap (``lag``) as after any lost
connection (:mod:`cluster.redis_pubsub`).

The health check sends ``ROLE`` instead of ``PING``: a server that answers but
is no longer the primary (a demoted primary that came back, a stale sentinel
answer) counts as down, so nothing is written to a replica.

URL: ``redis+sentinel://[[user]:password@]H1:P1[,H2:P2...]/MASTER[/DB]`` with the
password of the Redis servers; ``?sentinel_password=...`` when the sentinels
have their own (and ``?sentinel_username=...``).

Replication is asynchronous, so a primary killed right after a write may take
it along; the sentinels promote the replica with the highest replication
offset. A publication is therefore acknowledged only once ``WAIT`` says one
replica holds it (``?min_replicas=auto``, the default here: whenever the
primary's ``ROLE`` lists a replica; ``1`` even when it lists none, ``0``
never; ``?replica_timeout_ms=`` bounds the wait, 500 by default), so the
promoted replica holds every acknowledged publication (:mod:`cluster.redis_pipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import Sentinel

from hubbub.cluster.redis_conn import (
    AUTO_REPLICAS,
    CONNECT_TIMEOUT,
    ConnectionFactory,
    Endpoint,
    connection_options,
    pack,
    split_hosts_url,
)

SCHEME = "redis+sentinel"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[auth@]H1:P1,H2:P2/MASTER[/DB][?sentinel_password=...]``.

    Raises ``ValueError`` with what is wrong.
    """
    url_parts = split_hosts_url(url, SCHEME)
    path = url_parts.path
    if not path or len(path) > 2:
        raise ValueError(f"{SCHEME}: the path must be /MASTER_NAME[/DB]: {url!r}")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"{SCHEME}: the database must be a number: {path[1]!r}")
    return SentinelTarget(
        sentinels=url_parts.hosts,
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=url_parts.username,
        password=url_parts.password,
        sentinel_username=url_parts.query.get("sentinel_username"),
        sentinel_password=url_parts.query.get("sentinel_password"),
    )


class PrimaryConnection(Connection):
    """A connection whose address is the primary the sentinels name at connect time."""

    def __init__(self, *, sentinel: Sentinel, master: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sentinel = sentinel
        self._master = master

    async def _connect(self) -> None:
        # MasterNotFoundError (no sentinel answers, or none sees a primary up)
        # fails the connect like a refused one: the shard stays down, 503.
        self.host, self.port = await self._sentinel.discover_master(self._master)
        await super()._connect()


class SentinelEndpoint(Endpoint):
    """The primary of one Sentinel-monitored master, found on every connect."""

    probe = pack(b"ROLE")
    default_replication = AUTO_REPLICAS

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.target = target = parse_sentinel_url(self.url)
        sentinel_options: dict[str, Any] = {
            "socket_timeout": CONNECT_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "protocol": 2,
            "driver_info": None,
        }
        self.sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)

    def factory(self, client_name: str, socket_timeout: float | None = None) -> ConnectionFactory:
        target = self.target
        kwargs = connection_options(client_name, socket_timeout)
        kwargs.update(db=target.db, username=target.username, password=target.password)
        sentinel = self.sentinel

        def make() -> AbstractConnection:
            return PrimaryConnection(sentinel=sentinel, master=target.master, **kwargs)

        return make

    def probe_ok(self, reply: Any) -> str | None:
        role = reply[0] if isinstance(reply, list) and reply else reply
        return None if role == b"master" else f"not the primary (ROLE {role!r})"

    async def close(self) -> None:
        await self.sentinel.aclose()

"""Choose a broker engine from the configuration (the only place that does)."""

from __future__ import annotations

from collections.abc import Sequence

from hubbub.cluster.broker import Broker

#: URL schemes of ``--redis`` / ``[broker] redis`` (docs/clustering.md).
SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


def check_redis_urls(urls: Sequence[str]) -> None:
    """Raise ``ValueError`` saying what is wrong with the broker URLs, if anything.

    Each URL is a shard (plain or behind Sentinel); a ``redis+cluster://`` URL
    is a whole Redis Cluster, which shards by itself, so it comes alone.
    """
    from hubbub.cluster.redis_conn import NO_REPLICAS, split_replication

    for url in urls:
        if not url.startswith(SCHEMES):
            raise ValueError(f"not a redis:// URL: {url!r}")
        split_replication(url, NO_REPLICAS)  # ?min_replicas=, ?replica_timeout_ms=
        if url.startswith("redis+sentinel://"):
            from hubbub.cluster.redis_sentinel import parse_sentinel_url

            parse_sentinel_url(url)
        elif url.startswith("redis+cluster://"):
            from hubbub.cluster.redis_cluster import parse_cluster_url

            parse_cluster_url(url)
            if len(urls) > 1:
                raise ValueError("a redis+cluster:// URL is a whole cluster: give it alone")


def make_broker(
    redis_urls: Sequence[str],
    *,
    node_id: str,
    probe_interval: float = 1.0,
    probe_timeout: float = 3.0,
) -> Broker:
    """The in-memory engine without Redis URLs; the Redis engine with them (the
    Redis Cluster engine for a ``redis+cluster://`` URL), its pub/sub
    connections probed every ``probe_interval`` seconds (0: not probed)."""
    if not redis_urls:
        from hubbub.cluster.memory import MemoryBroker

        return MemoryBroker()
    check_redis_urls(redis_urls)
    if redis_urls[0].startswith("redis+cluster://"):
        from hubbub.cluster.redis_cluster import ClusterBroker

        return ClusterBroker(
            redis_urls[0],
            node_id=node_id,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
        )
    from hubbub.cluster.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

    return RedisBroker(  # type: ignore[no-any-return,unused-ignore]
        list(redis_urls),
        node_id=node_id,
        probe_interval=probe_interval,
        probe_timeout=probe_timeout,
    )

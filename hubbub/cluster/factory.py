"""Choose a broker engine from the configuration (the only place that does)."""

from __future__ import annotations

from collections.abc import Sequence

from hubbub.cluster.broker import Broker


def make_broker(redis_urls: Sequence[str], *, node_id: str) -> Broker:
    """The in-memory engine without Redis URLs; the Redis engine with them."""
    if not redis_urls:
        from hubbub.cluster.memory import MemoryBroker

        return MemoryBroker()
    from hubbub.cluster.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

    return RedisBroker(list(redis_urls), node_id=node_id)  # type: ignore[no-any-return,unused-ignore]

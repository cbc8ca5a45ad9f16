"""Which Redis shard owns a channel: jump consistent hash over a stable hash.

Every node must agree on the owner of every channel without talking to the
others, so the mapping depends only on the channel name and the number of
shards (the order of the ``--redis`` URLs is the shard order and must be the
same on every node). Jump hash (Lamping & Veach, "A Fast, Minimal Memory,
Consistent Hash Algorithm", 2014) moves only ``1/(n+1)`` of the channels when
an ``n+1``-th shard is appended, and none of them between old shards.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

_MASK64 = (1 << 64) - 1
_LCG = 2862933555777941757  # the 64-bit linear congruential step of the paper


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``[0, buckets)`` of a 64-bit ``key`` (the paper's algorithm)."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    key &= _MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _LCG + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def channel_key(channel: str) -> int:
    """A stable 64-bit hash of a channel name (the same in every process and
    Python version, unlike ``hash()``)."""
    digest = hashlib.blake2b(channel.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@lru_cache(maxsize=65536)
def shard_of(channel: str, shards: int) -> int:
    """The index of the shard that owns ``channel`` among ``shards`` shards."""
    if shards == 1:
        return 0
    return jump_hash(channel_key(channel), shards)

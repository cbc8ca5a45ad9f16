"""Presence in Redis hashes, kept alive by a per-node heartbeat.

Each channel's presence is one hash (``hubbub:{<channel>}:presence``: client
id → ``<expires_ms>:<msgpack {u, i}>``, see :mod:`cluster.redis_layout`).
Entries carry their own expiry, set from Redis's clock (redis-server 7.0 has no
per-field TTL), and a read drops the expired ones. The node remembers the
entries of its own clients and rewrites them every :attr:`Presence.interval`
seconds, so the entries of a node that died vanish within
:attr:`Presence.ttl_factor` heartbeats, and those lost with a Redis restart
come back within one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubbub import log
from hubbub.cluster.broker import ClientInfo
from hubbub.cluster.redis_conn import Supervised, describe
from hubbub.cluster.redis_layout import Keys, decode_presence, encode_presence
from hubbub.cluster.redis_scripts import PRESENCE_ADD, PRESENCE_GET

if TYPE_CHECKING:
    from hubbub.cluster.redis_shard import Backend

#: Entries per heartbeat script call (one call must not hold Redis for long).
HEARTBEAT_BATCH = 200


class Presence:
    """This node's presence entries and the heartbeat that keeps them alive."""

    #: Seconds between heartbeats.
    interval: float = 5.0
    #: An entry lives this many heartbeats after its last refresh.
    ttl_factor: int = 3

    def __init__(self, keys: Keys, shard_of: Callable[[str], Backend]) -> None:
        self._keys = keys
        self._shard_of = shard_of
        self.local: dict[tuple[str, str], bytes] = {}  # (channel, client) -> encoded value
        self.heartbeat = Supervised("redis-presence-heartbeat", self._run)

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.interval * self.ttl_factor * 1000))

    async def add(self, channel: str, info: ClientInfo) -> None:
        value = encode_presence(info)
        self.local[(channel, info.client)] = value
        key = self._keys.presence(channel)
        await self._shard_of(channel).eval(PRESENCE_ADD, (key,), (self.ttl_ms, info.client, value))

    async def remove(self, channel: str, client: str) -> None:
        self.local.pop((channel, client), None)
        await self._shard_of(channel).call(b"HDEL", self._keys.presence(channel), client)

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self._shard_of(channel).eval(PRESENCE_GET, (self._keys.presence(channel),), ())
        return {
            flat[i].decode(): decode_presence(flat[i].decode(), flat[i + 1])
            for i in range(0, len(flat), 2)
        }

    async def refresh(self) -> int:
        """One heartbeat: rewrite every local entry with a new expiry; returns
        how many were written (shards that are down are skipped)."""
        by_shard: dict[Backend, list[tuple[str, str, bytes]]] = {}
        for (channel, client), value in self.local.items():
            by_shard.setdefault(self._shard_of(channel), []).append((channel, client, value))
        written = 0
        for shard, entries in by_shard.items():
            if not shard.up:
                continue
            for i in range(0, len(entries), HEARTBEAT_BATCH):
                batch = entries[i : i + HEARTBEAT_BATCH]
                keys = [self._keys.presence(channel) for channel, _, _ in batch]
                args: list[str | bytes | int] = [self.ttl_ms]
                for _, client, value in batch:
                    args += (client, value)
                try:
                    written += await shard.eval(PRESENCE_ADD, keys, args)
                except Exception as exc:  # down, or an error reply: the next beat retries
                    log.warning("presence_heartbeat_failed", shard=shard.label, error=describe(exc))
                    break
        return written

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()

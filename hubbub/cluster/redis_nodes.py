"""The registry of live nodes (``GET /api/nodes``), in Redis, kept by heartbeats.

One hash on the first shard, ``hubbub:nodes``: node id →
``<expires_ms>:<msgpack info>``, the same format (and scripts) as presence.
Each node rewrites its entry every :attr:`NodeRegistry.interval` seconds and
deletes it when it closes; the entry of a node that died expires after
:attr:`NodeRegistry.ttl_factor` heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hubbub import log
from hubbub.cluster.redis_conn import Supervised, describe
from hubbub.cluster.redis_scripts import PRESENCE_ADD, PRESENCE_GET
from hubbub.protocol.codec import decode_msgpack, encode_msgpack

if TYPE_CHECKING:
    from hubbub.cluster.redis_shard import Backend


class NodeRegistry:
    """This node's entry in the registry, and reading everybody's."""

    #: Seconds between heartbeats.
    interval: float = 5.0
    #: An entry lives this many heartbeats after its last refresh.
    ttl_factor: int = 3

    def __init__(
        self, key: str, backend: Backend, node_id: str, info: Callable[[], dict[str, Any]]
    ) -> None:
        self._key = key
        self.backend = backend
        self.node_id = node_id
        self._info = info
        self.started = time.time()
        self.heartbeat = Supervised("redis-node-heartbeat", self._run)

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.interval * self.ttl_factor * 1000))

    async def beat(self) -> bool:
        """Write this node's entry now; False when Redis could not take it."""
        entry = {"node": self.node_id, "started": self.started, "updated": time.time()}
        entry.update(self._info())
        try:
            await self.backend.eval(
                PRESENCE_ADD, (self._key,), (self.ttl_ms, self.node_id, encode_msgpack(entry))
            )
        except Exception as exc:
            log.warning("node_heartbeat_failed", shard=self.backend.label, error=describe(exc))
            return False
        return True

    async def leave(self) -> None:
        """Remove this node's entry (a clean shutdown); best effort."""
        if not self.backend.up:
            return
        try:
            async with asyncio.timeout(1.0):
                await self.backend.call(b"HDEL", self._key, self.node_id)
        except Exception as exc:
            log.warning("node_leave_failed", shard=self.backend.label, error=describe(exc))

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node's last report, by node id."""
        flat = await self.backend.eval(PRESENCE_GET, (self._key,), ())
        return sorted(
            (decode_msgpack(flat[i + 1]) for i in range(0, len(flat), 2)),
            key=lambda entry: str(entry.get("node")),
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

"""Floods of commands from one client, to measure what they leave in a node.

:func:`flood` pipelines ``count`` commands over one raw TCP connection in
batches and waits for every reply, then returns the node's RSS growth (read
from /proc). The test node raises the command rate limit so the flood is
fast: what is measured is the state commands leave behind, not the bucket.
Run as a script to print the figures of docs/limits.md::

    python -m tests.e2e.floods 200000
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from tests.e2e.probes import rss_bytes
from tests.procs import NodeProc, start_node

#: A node that lets one client send as fast as it can, and a namespace with history.
FLOOD_CONFIG = """
[limits]
messages_per_second = 10000000
message_burst = 10000000

[namespaces.feed]
history_size = 100
history_ttl = 300
"""
BATCH = 2000

Make = Callable[[int], dict[str, Any]]


def namespaces(i: int) -> dict[str, Any]:
    """A publish to a namespace of its own (``n1-x:c``, ``n2-x:c``, ...)."""
    return {"op": "publish", "channel": f"n{i}-x:c", "data": 1}


def history_reads(i: int) -> dict[str, Any]:
    """A history read of a channel nobody ever published to."""
    return {"op": "history", "channel": f"feed:never-{i}", "limit": 1}


async def flood(node: NodeProc, make: Make, count: int) -> int:
    """Send ``count`` commands made by ``make`` (each with an id) and wait for
    every reply; returns the node's RSS growth in bytes."""
    assert node.tcp is not None
    reader, writer = await asyncio.open_connection(*node.tcp)
    decoder = FrameDecoder(2**24)

    async def replies(n: int) -> None:
        while n > 0:
            data = await asyncio.wait_for(reader.read(2**16), 10.0)
            assert data, "the node closed the connection"
            n -= sum(1 for p in decoder.feed(data) if "id" in decode_msgpack(p))

    writer.write(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
    await replies(1)
    before = rss_bytes(node.proc.pid)
    sent = 0
    while sent < count:
        n = min(BATCH, count - sent)
        writer.write(
            b"".join(
                encode_frame(encode_msgpack({**make(sent + k), "id": 2 + sent + k}))
                for k in range(n)
            )
        )
        await replies(n)
        sent += n
    growth = rss_bytes(node.proc.pid) - before
    writer.close()
    return growth


async def _main(count: int) -> None:
    for name, make in (("namespaces", namespaces), ("history", history_reads)):
        node = start_node(FLOOD_CONFIG)
        try:
            await flood(node, make, BATCH)  # warm up: buffers, code paths
            growth = await flood(node, make, count)
        finally:
            node.stop()
        print(f"{name}: {count} commands, RSS +{growth / 2**20:.1f} MiB")


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))

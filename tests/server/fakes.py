"""A node's parts around a fake transport: no sockets, no listeners.

:func:`node_parts` builds a real :class:`~hubbub.server.node.Node` (settings,
limits, admission, outboxes, hub, commands on the in-memory broker) without
starting its listeners; :func:`connect` hands it a :class:`FakeTransport` as a
TCP listener would, and :meth:`FakeTransport.messages` decodes what the node
wrote to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hubbub.cluster.memory import MemoryBroker
from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.frames import FrameDecoder
from hubbub.server import tcp
from hubbub.server.config import from_mapping
from hubbub.server.connection import Connection
from hubbub.server.node import Node
from hubbub.server.wire import Format


class FakeTransport:
    """Records what is written; ``backlog`` is what the kernel has not taken."""

    def __init__(self, peer: str = "10.0.0.1") -> None:
        self.peer = peer
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closing = False
        self.eof = False
        self.aborted = False
        self.dead = False  # writes raise, as uvloop's do once the peer is gone

    def write(self, data: bytes) -> None:
        if self.dead:
            raise RuntimeError("transport is closed")
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def messages(self) -> list[dict[str, Any]]:
        """Every TCP frame written so far, decoded."""
        decoder = FrameDecoder(2**31)
        return [decode_msgpack(p) for p in decoder.feed(b"".join(self.writes))]


def config(**tables: dict[str, Any]) -> Any:
    base: dict[str, dict[str, Any]] = {"server": {"tcp": "", "ws": "", "admin": ""}}
    for name, table in tables.items():
        base[name] = {**base.get(name, {}), **table}
    return from_mapping(base, "test")


@asynccontextmanager
async def node_parts(**tables: dict[str, Any]) -> AsyncIterator[Node]:
    """A node on the in-memory broker, its listeners never bound."""
    node = Node(config(**tables), MemoryBroker())
    await node.broker.start(node.hub)
    try:
        yield node
    finally:
        await node.stop()


def connect(node: Node, peer: str = "10.0.0.1") -> tuple[Connection, FakeTransport, bool]:
    """A new TCP connection on a fake transport, and whether it was admitted."""
    transport = FakeTransport(peer)
    conn = node.accept(transport, "tcp", Format.TCP, tcp.goodbye)  # type: ignore[arg-type]
    return conn, transport, node.admission.admit(conn)

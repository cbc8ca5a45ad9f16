"""The raw TCP transport: length-prefixed msgpack frames (PROTOCOL.md §1)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.errors import FrameTooLarge, ProtocolViolation
from hubbub.protocol.frames import FrameDecoder
from hubbub.server.wire import Format

if TYPE_CHECKING:
    from hubbub.server.node import Node

READ_CHUNK = 65536


async def serve_tcp(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read large chunks, decode frames, hand each message to the connection."""
    transport = writer.transport
    conn = node.accept(transport, "tcp", Format.TCP)  # type: ignore[arg-type]
    if not conn.counted:
        node.refuse(conn)  # a connection limit (3007) or a drain: before reading anything
    decoder = FrameDecoder(node.config.limits.max_frame)
    stats_in = node.stats.bytes_in
    try:
        while conn.writable:
            data = await reader.read(READ_CHUNK)
            if not data:
                break
            stats_in["tcp"] += len(data)
            try:
                payloads = decoder.feed(data)
                for payload in payloads:
                    await conn.handle(decode_msgpack(payload))
                    if not conn.writable:
                        break
                    await conn.pace(writer)
                if decoder.error is not None and conn.writable:
                    raise decoder.error  # after the frames that came before it
            except ProtocolViolation as exc:
                if isinstance(exc, FrameTooLarge):
                    node.limits.hit("max_frame")
                conn.disconnect(exc.code, exc.reason)
                break
    except (ConnectionError, OSError):
        pass
    finally:
        await conn.finish(reader)

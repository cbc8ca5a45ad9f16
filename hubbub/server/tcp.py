"""The raw TCP transport: length-prefixed msgpack frames (PROTOCOL.md §1).

Its read loop reads large chunks and decodes frames (``protocol.frames``);
its close is the ``disconnect`` push (:func:`goodbye`) before the half-close
every connection does (``Connection.disconnect``).
"""

from __future__ import annotations

import asyncio
from typing import cast

from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.exceptions import FrameTooLarge, ProtocolViolation
from hubbub.protocol.frames import FrameDecoder
from hubbub.protocol.messages import push_disconnect
from hubbub.server.connection import Services
from hubbub.server.outbox import Outbox
from hubbub.server.wire import Format

READ_CHUNK = 65536


def goodbye(outbox: Outbox, code: DisconnectCode, reason: str | None, after: int | None) -> None:
    """A TCP client's last message: the ``disconnect`` push (PROTOCOL.md §3)."""
    outbox.send(push_disconnect(code, reason, after))


async def serve_tcp(
    services: Services, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read large chunks, decode frames, hand each message to the commands."""
    transport = cast(asyncio.Transport, writer.transport)  # start_server's are Transports
    conn, admitted = services.accept(transport, "tcp", Format.TCP, goodbye)
    if not admitted:
        services.admission.refuse(conn)  # a connection limit (3007) or a drain: before reading
    decoder = FrameDecoder(services.settings.limits.max_frame)
    handle = services.commands.handle
    stats_in = services.stats.bytes_in
    try:
        while conn.writable:
            data = await reader.read(READ_CHUNK)
            if not data:
                break
            stats_in["tcp"] += len(data)
            try:
                payloads = decoder.feed(data)
                for payload in payloads:
                    await handle(conn, decode_msgpack(payload))
                    if not conn.writable:
                        break
                    await conn.outbox.pace(writer)
                if decoder.error is not None and conn.writable:
                    raise decoder.error  # after the frames that came before it
            except ProtocolViolation as exc:
                if isinstance(exc, FrameTooLarge):
                    services.limits.hit("max_frame")
                conn.disconnect(exc.code, exc.reason)
                break
    except (ConnectionError, OSError):
        pass
    finally:
        await conn.finish(reader)

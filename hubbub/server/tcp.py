"""The raw TCP transport: length-prefixed msgpack frames (PROTOCOL.md §1).

Its read loop reads large chunks and decodes frames (``protocol.frames``);
its close is the ``disconnect`` push (:func:`goodbye`) before the half-close
every connection does (``Connection.disconnect``). With ``[server]
proxy_protocol``, a connection from a trusted proxy first gives its PROXY
protocol header (``protocol.proxy``): the client's address, admitted only then.
"""

from __future__ import annotations

import asyncio
from typing import cast

from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.exceptions import FrameTooLarge, ProtocolViolation
from hubbub.protocol.frames import FrameDecoder
from hubbub.protocol.messages import push_disconnect
from hubbub.protocol.proxy import parse_header
from hubbub.server.connection import Connection, Services
from hubbub.server.outbox import Outbox
from hubbub.server.proxies import parse_ip
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
    conn = services.accept(transport, "tcp", Format.TCP, goodbye)
    settings = services.settings
    proxied = settings.config.server.proxy_protocol and settings.trusted.trusts(conn.peer)
    if not proxied and not services.admission.admit(conn):
        services.admission.refuse(conn)  # a connection limit (3007) or a drain: before reading
    decoder = FrameDecoder(settings.limits.max_frame)
    handle = services.commands.handle
    stats_in = services.stats.bytes_in
    try:
        data = await _proxy_header(services, conn, reader) if proxied else b""
        while conn.writable:
            if not data:
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
                await conn.throttle()
                if decoder.error is not None and conn.writable:
                    raise decoder.error  # after the frames that came before it
                data = b""
            except ProtocolViolation as exc:
                if isinstance(exc, FrameTooLarge):
                    services.limits.hit("max_frame")
                conn.disconnect(exc.code, exc.reason)
                break
    except (ConnectionError, OSError):
        pass
    except Exception:  # a bug of ours: this connection ends, the node goes on
        services.limits.fault("tcp")
        transport.abort()
    finally:
        await conn.finish(reader)


async def _proxy_header(
    services: Services, conn: Connection, reader: asyncio.StreamReader
) -> bytes:
    """Read a trusted proxy's PROXY header, take the client's address from it and
    admit the connection by it; the client's bytes that came after the header.
    A missing or malformed header is 3004 (``handshake_timeout`` bounds the wait)."""
    received = b""
    while conn.writable:
        data = await reader.read(READ_CHUNK)
        if not data:
            return b""
        services.stats.bytes_in["tcp"] += len(data)
        received += data
        try:
            parsed = parse_header(received)
        except ProtocolViolation as exc:
            conn.disconnect(exc.code, exc.reason)
            return b""
        if parsed is None:
            continue
        header, used = parsed
        if header.source is not None:  # None: LOCAL/UNKNOWN, the peer stands
            conn.peer = parse_ip(header.source[0]) or conn.peer
        if not services.admission.admit(conn):
            services.admission.refuse(conn)
            return b""
        return received[used:]
    return b""

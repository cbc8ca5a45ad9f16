"""The WebSocket transport: websockets' Sans-I/O ``ServerProtocol``, our read loop.

Handshake on path ``/ws`` only (anything else: 404); subprotocol
``hubbub.v1.msgpack`` (binary) or ``hubbub.v1.json`` (text, also the default
when the client offers none); no compression, so the publication frames the
hub builds once are valid for every subscriber. ``max_frame`` is the message
size limit: a larger message is closed with 1009. Incoming messages are
decoded by their frame type (binary: msgpack, text: JSON).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from hubbub.protocol.codec import SUBPROTOCOLS, Encoding, decode_json, decode_msgpack
from hubbub.protocol.codes import WS_MESSAGE_TOO_BIG
from hubbub.protocol.errors import ProtocolViolation
from hubbub.server.wire import Format

if TYPE_CHECKING:
    from hubbub.server.connection import Connection
    from hubbub.server.node import Node

READ_CHUNK = 65536
WS_PATH = "/ws"
_quiet = logging.getLogger("hubbub.websockets")
_quiet.setLevel(logging.WARNING)


def _select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Our choice among the client's offers; none offered means JSON, not a 400."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return Subprotocol(name)
    return None


def _origins(node: Node) -> list[str | re.Pattern[str] | None] | None:
    """``[auth] allowed_origins`` for the protocol (a refusal is a 403 at the
    handshake): exact origins, or globs with ``*`` (``https://*.example.com``).
    A request without an Origin header is let through: only browsers send one,
    and the check exists to stop other sites' pages, not non-browser clients
    (which could send any Origin). None when the list is empty: any origin."""
    allowed = node.config.auth.allowed_origins
    if not allowed:
        return None
    origins: list[str | re.Pattern[str] | None] = [
        re.compile(fnmatch.translate(o)) if "*" in o else o for o in allowed
    ]
    origins.append(None)
    return origins


def _flush_protocol(conn: Connection, ws: ServerProtocol) -> bool:
    """Queue what the protocol wants sent; True when it asked to end the stream."""
    eof = False
    for data in ws.data_to_send():
        if data:
            conn.write(data)
        else:
            eof = True
    return eof


async def serve_ws(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    conn = node.accept(transport, "ws", Format.WS_TEXT)  # type: ignore[arg-type]
    ws = ServerProtocol(
        origins=_origins(node),  # type: ignore[arg-type]
        extensions=None,
        subprotocols=[Subprotocol(s) for s in SUBPROTOCOLS],
        select_subprotocol=_select_subprotocol,
        max_size=node.config.limits.max_frame,
        logger=_quiet,
    )
    conn.ws = ws
    stats_in = node.stats.bytes_in
    fragments: list[bytes] = []
    fragment_text = False
    try:
        while conn.writable:
            data = await reader.read(READ_CHUNK)
            if not data:
                ws.receive_eof()
                break
            stats_in["ws"] += len(data)
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Request):
                    _handshake(conn, ws, event)
                    if not conn.counted and ws.state is WsState.OPEN:
                        # A connection limit (3007) or a drain, decided at
                        # accept: told right after the 101, so a browser
                        # sees the close code.
                        _flush_protocol(conn, ws)
                        node.refuse(conn)
                        break
                    continue
                if not isinstance(event, Frame):
                    continue
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if not event.fin:
                        fragments = [cast(bytes, event.data)]
                        fragment_text = opcode is Opcode.TEXT
                        continue
                    payload, text = cast(bytes, event.data), opcode is Opcode.TEXT
                elif opcode is Opcode.CONT:
                    fragments.append(cast(bytes, event.data))
                    if not event.fin:
                        continue
                    payload, text = b"".join(fragments), fragment_text
                    fragments = []
                else:
                    continue  # ping (pong queued by the protocol), pong, close
                try:
                    message = decode_json(payload) if text else decode_msgpack(payload)
                except ProtocolViolation as exc:
                    conn.disconnect(exc.code, exc.reason)
                    break
                await conn.handle(message)
                if not conn.writable:
                    break
                await conn.pace(writer)
            if conn.writable and _flush_protocol(conn, ws):
                break  # close handshake done, handshake refused, or protocol error
            if ws.state is WsState.CLOSED or ws.close_expected():
                break
            # Pongs to WebSocket pings are output too: a client that floods
            # pings without reading is not read further either.
            await conn.pace(writer)
    except (ConnectionError, OSError):
        pass
    finally:
        if conn.writable and ws.parser_exc is not None and ws.state is not WsState.CONNECTING:
            # The websockets protocol failed the connection itself (1002, 1009...).
            code = ws.close_sent.code if ws.close_sent is not None else 1002
            node.metrics.disconnects.labels(str(code)).inc()
            if code == WS_MESSAGE_TOO_BIG:
                node.limits.hit("max_frame")
        await conn.finish(reader)


def _handshake(conn: Connection, ws: ServerProtocol, request: Request) -> None:
    """Answer the HTTP upgrade: 404 off ``/ws``, else accept (origin and
    subprotocol checked by the protocol) and pick the wire format."""
    path = request.path.split("?", 1)[0]
    response: Any
    if path != WS_PATH:
        response = ws.reject(404, "Not Found: hubbub's WebSocket endpoint is /ws\n")
    else:
        response = ws.accept(request)
    ws.send_response(response)
    if response.status_code == 101:
        conn.fmt = Format.WS_BINARY if ws.subprotocol == Encoding.MSGPACK.value else Format.WS_TEXT
    elif response.status_code == 403:
        conn.node.limits.hit("origin")

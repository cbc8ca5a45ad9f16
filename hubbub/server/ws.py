"""The WebSocket transport: websockets' Sans-I/O ``ServerProtocol``, our read loop.

Handshake on path ``/ws`` only (anything else: 404); subprotocol
``hubbub.v1.msgpack`` (binary) or ``hubbub.v1.json`` (text, also the default
when the client offers none); no compression, so the publication frames the
hub builds once are valid for every subscriber. ``max_frame`` is the message
size limit: a larger message is closed with 1009. Incoming messages are
reassembled from their frames and decoded by their frame type (binary:
msgpack, text: JSON). The WebSocket close is this transport's own
(:func:`goodbye_for`): the ``disconnect`` push, then a close frame with the
same code, before the half-close every connection does. A connection from a
``[server] trusted_proxies`` peer takes the client's address from the handshake's
``X-Forwarded-For`` / ``X-Real-IP`` (``server.proxies``) and is admitted then.

``[server] ws_echo_path`` (a testing aid, off by default) opens a second path
whose connections echo every message back as it came, through this same read
loop, framing and close handling: what the Autobahn fuzzing cases need to
check RFC 6455 conformance (docs/conformance.md).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import re
from collections.abc import Sequence
from typing import Any, cast

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from hubbub.protocol.codec import SUBPROTOCOLS, Encoding, decode_json, decode_msgpack
from hubbub.protocol.codes import WS_MESSAGE_TOO_BIG, DisconnectCode
from hubbub.protocol.exceptions import ProtocolViolation
from hubbub.protocol.messages import push_disconnect
from hubbub.server import static
from hubbub.server.connection import Connection, Goodbye, Services
from hubbub.server.exceptions import MessageTooBig
from hubbub.server.globs import ORIGIN_SEPARATORS, compile_glob
from hubbub.server.outbox import Outbox
from hubbub.server.settings import Settings
from hubbub.server.wire import Format

READ_CHUNK = 65536
WS_PATH = "/ws"
#: Bytes of a close frame's reason (125 of payload less the 2-byte code).
MAX_CLOSE_REASON = 123
#: Longest HTTP upgrade request read before it must have ended (431 past it).
MAX_REQUEST = 65536
#: Bytes a frame header costs at least; what a message counts per frame
#: (RFC 6455 §5.2), so empty continuation frames add up too.
FRAME_OVERHEAD = 2
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


def _origins(settings: Settings) -> list[str | re.Pattern[str] | None] | None:
    """``[auth] allowed_origins`` for the protocol (a refusal is a 403 at the
    handshake): exact origins, or globs with ``*`` (``https://*.example.com``).
    A request without an Origin header is let through: only browsers send one,
    and the check exists to stop other sites' pages, not non-browser clients
    (which could send any Origin). None when the list is empty: any origin."""
    allowed = settings.config.auth.allowed_origins
    if not allowed:
        return None
    origins: list[str | re.Pattern[str] | None] = [
        compile_glob(o, ORIGIN_SEPARATORS) if "*" in o else o for o in allowed
    ]
    origins.append(None)
    return origins


class _Protocol(ServerProtocol):
    """websockets' server side, but a close frame in the middle of a fragmented
    message is answered like any close (RFC 6455 §5.4: control frames may come
    between fragments; §5.5.1: echo the code), and the incomplete message is
    dropped; websockets would fail the connection with 1002 instead."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


def _protocol(settings: Settings) -> ServerProtocol:
    """websockets' Sans-I/O server side, with our limits and subprotocols."""
    return _Protocol(
        origins=_origins(settings),  # type: ignore[arg-type]
        extensions=None,
        subprotocols=[Subprotocol(s) for s in SUBPROTOCOLS],
        select_subprotocol=_select_subprotocol,
        max_size=settings.limits.max_frame,
        logger=_quiet,
    )


def close_reason(reason: str | None) -> str:
    """``reason`` cut to the 123 bytes a close frame holds (RFC 6455 §5.5), at a
    character boundary: the limit is in UTF-8 bytes, not characters."""
    raw = (reason or "").encode()
    if len(raw) <= MAX_CLOSE_REASON:
        return reason or ""
    return raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


def goodbye_for(ws: ServerProtocol) -> Goodbye:
    """The WebSocket close: first whatever the protocol had queued (a pong, its
    answer to the client's close), then, while the connection is open, the
    ``disconnect`` push and a close frame with its code (PROTOCOL.md §1, §5).
    Before the handshake and after a close from either side, nothing more."""

    def goodbye(
        outbox: Outbox, code: DisconnectCode, reason: str | None, after: int | None
    ) -> None:
        _queue(outbox, ws)
        if ws.state is not WsState.OPEN:
            return
        outbox.send(push_disconnect(code, reason, after))
        ws.send_close(int(code), close_reason(reason))
        _queue(outbox, ws)

    return goodbye


def _queue(outbox: Outbox, ws: ServerProtocol) -> bool:
    """Queue what the protocol wants sent; True when it asked to end the stream."""
    eof = False
    for data in ws.data_to_send():
        if data:
            outbox.write(data)
        else:
            eof = True
    return eof


def _flush_protocol(conn: Connection, ws: ServerProtocol) -> bool:
    """Queue what the protocol wants sent; True when it asked to end the stream."""
    return _queue(conn.outbox, ws)


class _Messages:
    """Whole messages out of data frames (RFC 6455 §5.4): a fragmented one is
    joined from its continuation frames; control frames are none. A message
    counts every frame's bytes from its first one (payload plus
    :data:`FRAME_OVERHEAD`) against ``max_size``, so a stream of empty
    continuation frames is cut like a large message (1009).

    On the echo path, where no decoder reads the text (on ``/ws`` the JSON
    decoder refuses bad UTF-8 with 3004, PROTOCOL.md §1), text is checked as it
    arrives, fragment by fragment, and :meth:`add` raises ``UnicodeDecodeError``
    at the first invalid byte (RFC 6455 §8.1: fail the connection, 1007)."""

    __slots__ = ("echo", "fragments", "max_size", "size", "text", "utf8")

    def __init__(self, max_size: int) -> None:
        self.fragments: list[bytes] = []
        self.text = False
        self.size = 0
        self.max_size = max_size
        self.echo = False  # opened on ws_echo_path: messages go back, not to the commands
        self.utf8 = codecs.getincrementaldecoder("utf-8")()

    def add(self, frame: Frame) -> tuple[bytes, bool] | None:
        """The payload and whether it is text, once ``frame`` ends a message;
        raises :class:`MessageTooBig` past ``max_size``."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            text = opcode is Opcode.TEXT
            if text and self.echo:
                self.utf8.reset()
                self.utf8.decode(frame.data, frame.fin)
            if not frame.fin:
                self.fragments = [cast(bytes, frame.data)]
                self.text = text
                self.size = FRAME_OVERHEAD + len(frame.data)
                return None
            return cast(bytes, frame.data), text
        if opcode is Opcode.CONT:
            self.size += FRAME_OVERHEAD + len(frame.data)
            if self.size > self.max_size:
                raise MessageTooBig()
            if self.text and self.echo:
                self.utf8.decode(frame.data, frame.fin)
            self.fragments.append(cast(bytes, frame.data))
            if not frame.fin:
                return None
            payload, self.fragments = b"".join(self.fragments), []
            return payload, self.text
        return None  # ping (pong queued by the protocol), pong, close


async def serve_ws(
    services: Services, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Feed the protocol large chunks; answer the handshake, then hand each
    message to the commands. Until the handshake succeeded the protocol sees
    the HTTP request and nothing else: what a client pipelined behind it is
    kept back, and read only after a 101 — after a refusal (403, 404, 400,
    3007) it is never read, let alone executed."""
    ws = _protocol(services.settings)
    transport = cast(asyncio.Transport, writer.transport)  # start_server's are Transports
    conn = services.accept(transport, "ws", Format.WS_TEXT, goodbye_for(ws))
    # From a trusted proxy the client's address is in the handshake: admit it then.
    forwarded = services.settings.trusted.trusts(conn.peer)
    admitted = None if forwarded else services.admission.admit(conn)
    stats_in = services.stats.bytes_in
    messages = _Messages(services.settings.limits.max_frame)
    request = bytearray()  # the upgrade request, until it has ended
    try:
        while conn.writable:
            data = await reader.read(READ_CHUNK)
            if not data:
                ws.receive_eof()
                break
            stats_in["ws"] += len(data)
            if ws.state is WsState.CONNECTING:
                request += data
                data = _handshake_bytes(ws, request)
                if ws.state is WsState.CONNECTING:
                    await _events(services, conn, ws, admitted, messages, writer)
                if ws.state is not WsState.OPEN or not conn.writable:
                    data = b""  # refused, or not whole yet: nothing after it is read
            if data:
                ws.receive_data(data)
                await _events(services, conn, ws, admitted, messages, writer)
            if conn.writable and _flush_protocol(conn, ws):
                break  # close handshake done, handshake refused, or protocol error
            if ws.state is WsState.CLOSED or ws.close_expected():
                break
            # Pongs to WebSocket pings are output too: a client that floods
            # pings without reading is not read further either.
            await conn.outbox.pace(writer)
            await conn.throttle()
    except (ConnectionError, OSError):
        pass
    except Exception:  # a bug of ours: this connection ends, the node goes on
        services.limits.fault("ws")
        transport.abort()
    finally:
        if conn.writable and ws.parser_exc is not None and ws.state is not WsState.CONNECTING:
            _count_protocol_close(services, ws)
        await conn.finish(reader)


def _handshake_bytes(ws: ServerProtocol, request: bytearray) -> bytes:
    """Give the protocol the upgrade request once it has ended (its blank line)
    and return what came after it; refuse a request over :data:`MAX_REQUEST`
    with 431. Returns b"" while the request is incomplete."""
    end = request.find(b"\r\n\r\n")
    if end < 0:
        if len(request) > MAX_REQUEST:
            request.clear()
            ws.send_response(ws.reject(431, "Request Header Fields Too Large\n"))
        return b""
    head, rest = bytes(request[: end + 4]), bytes(request[end + 4 :])
    request.clear()
    ws.receive_data(head)
    return rest


async def _events(
    services: Services,
    conn: Connection,
    ws: ServerProtocol,
    admitted: bool | None,
    messages: _Messages,
    writer: asyncio.StreamWriter,
) -> None:
    """Act on what the protocol parsed: the handshake (and a refusal), then the
    messages, each handled before the next; stops once the connection closes."""
    handle = services.commands.handle
    for event in ws.events_received():
        if isinstance(event, Request):
            if admitted is None:
                admitted = _admit_forwarded(services, conn, event)
            messages.echo = _handshake(services, conn, ws, event)
            if not admitted and ws.state is WsState.OPEN:
                # A connection limit (3007) or a drain, decided at accept or
                # at the request: told right after the 101, so a browser sees the close code.
                _flush_protocol(conn, ws)
                services.admission.refuse(conn)
                return
            continue
        if not isinstance(event, Frame):
            continue
        if event.opcode is Opcode.PING or event.opcode is Opcode.PONG:
            conn.charge_control()
            continue
        try:
            whole = messages.add(event)
        except MessageTooBig:
            _too_big(services, ws)
            return
        except UnicodeDecodeError:
            ws.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        if whole is None:
            continue
        if messages.echo:
            _echo(conn, ws, *whole)
            await conn.outbox.pace(writer)
            continue
        message = _decode(conn, *whole)
        if message is None:
            return
        await handle(conn, message)
        if not conn.writable:
            return
        await conn.outbox.pace(writer)


def _too_big(services: Services, ws: ServerProtocol) -> None:
    """Close with 1009 a message that passed ``max_frame`` in its fragments."""
    services.limits.hit("max_frame")
    services.metrics.disconnects.labels(str(WS_MESSAGE_TOO_BIG)).inc()
    if ws.state is WsState.OPEN:
        ws.fail(WS_MESSAGE_TOO_BIG, "message too big")


def _echo(conn: Connection, ws: ServerProtocol, payload: bytes, text: bool) -> None:
    """``ws_echo_path``: the message back to its sender, of the same type."""
    if text:
        ws.send_text(payload)
    else:
        ws.send_binary(payload)
    _flush_protocol(conn, ws)


def _decode(conn: Connection, payload: bytes, text: bool) -> dict[str, Any] | None:
    """One message by its frame type (text: JSON, binary: msgpack); None after
    disconnecting a client that sent one that does not decode (3004)."""
    try:
        return decode_json(payload) if text else decode_msgpack(payload)
    except ProtocolViolation as exc:
        conn.disconnect(exc.code, exc.reason)
        return None


def _count_protocol_close(services: Services, ws: ServerProtocol) -> None:
    """The websockets protocol failed the connection itself (1002, 1009...):
    count its close code (and a ``max_frame`` hit for 1009)."""
    code = ws.close_sent.code if ws.close_sent is not None else 1002
    services.metrics.disconnects.labels(str(code)).inc()
    if code == WS_MESSAGE_TOO_BIG:
        services.limits.hit("max_frame")


def _admit_forwarded(services: Services, conn: Connection, request: Request) -> bool:
    """A trusted proxy's handshake: the client's address from its forwarding
    headers (``server.proxies``), then admission by that address."""
    headers = request.headers
    conn.peer = services.settings.trusted.forwarded_client(
        conn.peer, headers.get_all("X-Forwarded-For"), headers.get("X-Real-IP")
    )
    return services.admission.admit(conn)


def _handshake(services: Services, conn: Connection, ws: ServerProtocol, request: Request) -> bool:
    """Answer the HTTP upgrade: off ``/ws`` (and ``ws_echo_path`` when set) a
    web file or 404 (server/static.py), else accept (origin and subprotocol
    checked by the protocol) and pick the wire format. True for an accepted
    echo connection."""
    path = request.path.split("?", 1)[0]
    echo_path = services.settings.config.server.ws_echo_path
    echo = bool(echo_path) and path == echo_path
    response: Any
    if path != WS_PATH and not echo:
        response = static.respond(request, services.settings.config.server.demo)
    else:
        response = ws.accept(request)
    ws.send_response(response)
    if response.status_code == 101:
        binary = ws.subprotocol == Encoding.MSGPACK.value
        conn.outbox.fmt = Format.WS_BINARY if binary else Format.WS_TEXT
    elif response.status_code == 403:
        services.limits.hit("origin")
    return echo and response.status_code == 101

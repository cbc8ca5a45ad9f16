"""The transports' own parts, without sockets: WebSocket message reassembly and
each transport's close (its goodbye before the half-close)."""

from __future__ import annotations

import asyncio

from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from hubbub.protocol.codes import DisconnectCode
from hubbub.server import ws
from hubbub.server.wire import Format
from tests.server.fakes import FakeTransport, connect, node_parts


def test_fragments_join_into_one_message_and_control_frames_are_none() -> None:
    messages = ws._Messages(2**16)
    assert messages.add(Frame(Opcode.TEXT, b'{"op":', fin=False)) is None
    assert messages.add(Frame(Opcode.PING, b"")) is None  # between fragments: allowed
    assert messages.add(Frame(Opcode.CONT, b'"ping"', fin=False)) is None
    assert messages.add(Frame(Opcode.CONT, b"}")) == (b'{"op":"ping"}', True)
    assert messages.add(Frame(Opcode.BINARY, b"\x80")) == (b"\x80", False)


async def test_tcp_goodbye_is_the_disconnect_push() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        conn.disconnect(DisconnectCode.DRAINING, after=1500)
        (message,) = transport.messages()
        assert message["push"] == "disconnect" and message["code"] == DisconnectCode.DRAINING
        assert message["after"] == 1500 and message["reconnect"] is True
        assert transport.eof and not conn.writable


async def test_websocket_goodbye_waits_for_the_handshake() -> None:
    async with node_parts() as node:
        protocol = ServerProtocol()
        transport = FakeTransport()
        conn = node.accept(transport, "ws", Format.WS_TEXT, ws.goodbye_for(protocol))  # type: ignore[arg-type]
        conn.disconnect(DisconnectCode.PROTOCOL_ERROR, "no connect in time")
        await asyncio.sleep(0)
        assert transport.writes == [] and transport.eof  # no push before the 101

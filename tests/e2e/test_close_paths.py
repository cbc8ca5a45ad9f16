"""Every close path of both transports against a real node: a refused
WebSocket handshake runs nothing pipelined behind it, close reasons are cut by
bytes, and every ordering of the client's close, a server-side disconnect and
the client's EOF ends the connection without an exception in the node
(docs/limits.md "How a disconnect closes")."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from collections.abc import Iterator

import pytest

from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame
from hubbub.protocol.wsclient import (
    OP_CLOSE,
    OP_TEXT,
    ClientHandshake,
    FrameParser,
    client_frame,
    close_payload,
    parse_close,
)
from tests.e2e.rawclient import channel, open_tcp
from tests.procs import NodeProc, start_node

CONFIG = """
[auth]
allowed_origins = ["https://good.example"]
"""
EOF_MARK = b""  # in a list of segments: shut the write side down


@pytest.fixture(scope="module")
def close_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


def _errors(node: NodeProc, since: int = 0) -> list[str]:
    """Error lines the node logged from line ``since`` on."""
    return [x for x in node.lines[since:] if "Traceback" in x or "level=error" in x]


def handshake(node: NodeProc, *, path: str = "/ws", headers: str = "") -> bytes:
    assert node.ws is not None
    request = ClientHandshake(node.ws[0], node.ws[1], path).request()
    return request[:-2] + headers.encode() + b"\r\n"


def text(message: object) -> bytes:
    return client_frame(json.dumps(message).encode(), OP_TEXT)


async def exchange(
    address: tuple[str, int], segments: list[bytes], *, wait: float = 3.0
) -> tuple[bytes, bool]:
    """Send each segment (a pause between them; EOF_MARK half-closes, and
    what follows it is never sent), then
    read until the server closes or ``wait`` passes: (what came, closed)."""
    reader, writer = await asyncio.open_connection(*address)
    got = b""
    try:
        for segment in segments:
            if segment == EOF_MARK:  # nothing can follow a FIN
                writer.write_eof()
                break
            else:
                writer.write(segment)
            await writer.drain()
            await asyncio.sleep(0.02)
    except OSError:  # the server closed first
        pass
    closed = False
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                got += chunk
            closed = True
    except (TimeoutError, OSError):
        closed = closed or reader.at_eof()
    writer.close()
    return got, closed


def ws_reply(raw: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """The handshake's status and the frames after it."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    if status != 101:
        return status, []
    return status, FrameParser().feed(rest)


@pytest.mark.parametrize(
    ("request_headers", "path", "status"),
    [
        ("Origin: https://evil.example\r\n", "/ws", 403),
        ("", "/elsewhere", 404),
        ("Sec-WebSocket-Version: 7\r\n", "/ws", 400),
    ],
    ids=["origin", "path", "bad-request"],
)
async def test_a_refused_handshake_runs_nothing_pipelined_behind_it(
    close_node: NodeProc, request_headers: str, path: str, status: int
) -> None:
    """connect + publish in the same segment as a refused request used to be
    executed and reach subscribers: the Origin allow-list was no barrier."""
    name = channel()
    subscriber = await open_tcp(close_node)
    await subscriber.ok("subscribe", channel=name)
    pipelined = (
        handshake(close_node, path=path, headers=request_headers)
        + text({"op": "connect", "id": 1})
        + text({"op": "publish", "id": 2, "channel": name, "data": "through"})
    )
    assert close_node.ws is not None
    raw, _ = await exchange(close_node.ws, [pipelined], wait=1.0)
    assert ws_reply(raw)[0] == status, raw
    assert b'"ok"' not in raw  # no reply to the connect
    with pytest.raises(AssertionError):
        await subscriber.push("pub", channel=name, timeout=0.5)
    await subscriber.close()


async def test_a_close_reason_is_cut_at_123_bytes(close_node: NodeProc) -> None:
    """A reason over 123 UTF-8 bytes (an unknown op of emoji) used to raise out
    of the read loop: no close code, one traceback per connection."""
    assert close_node.ws is not None
    since = len(close_node.lines)
    raw, closed = await exchange(
        close_node.ws, [handshake(close_node), text({"op": "\U0001f4a5" * 60})]
    )
    status, frames = ws_reply(raw)
    closes = [parse_close(p) for op, p in frames if op == OP_CLOSE]
    assert status == 101 and closed and closes, raw
    code, reason = closes[0]
    assert code == 3004 and 0 < len(reason.encode()) <= 123, closes
    assert "\ufffd" not in reason  # cut at a character boundary
    assert not _errors(close_node, since)


_WS_PIECES = {
    "close": client_frame(close_payload(1000, "bye"), OP_CLOSE),
    "bad": client_frame(b"{not json", OP_TEXT),  # the server disconnects: 3004
    "eof": EOF_MARK,
}


@pytest.mark.parametrize("together", [True, False], ids=["one-segment", "segments"])
@pytest.mark.parametrize(
    "order", list(itertools.permutations(_WS_PIECES)), ids=lambda o: "-".join(o)
)
async def test_every_websocket_close_ordering_ends_cleanly(
    close_node: NodeProc, order: tuple[str, ...], together: bool
) -> None:
    """The client's close, a server disconnect and the client's EOF in every
    order, pipelined with the handshake or one by one: the node closes the
    connection, answers a close that came first with a close, and raises
    nothing (a close pipelined with the handshake used to fail an assertion
    inside websockets)."""
    assert close_node.ws is not None
    since = len(close_node.lines)
    pieces = [handshake(close_node), text({"op": "connect"})] + [_WS_PIECES[p] for p in order]
    # Together: every byte in one segment, then the EOF.
    segments = [b"".join(pieces), EOF_MARK] if together else pieces
    raw, closed = await exchange(close_node.ws, segments)
    status, frames = ws_reply(raw)
    assert status == 101 and closed, (order, raw)
    first = order[0]
    closes = [parse_close(p)[0] for op, p in frames if op == OP_CLOSE]
    if first == "close":
        assert closes == [1000], (order, frames)  # the client's close, answered
    elif first == "bad" and not together:
        assert closes == [3004], (order, frames)
    elif first == "bad":
        # In one segment the protocol has read (and answered) the client's close
        # before the node acts on the bad message: one close either way.
        assert len(closes) == 1 and closes[0] in (3004, 1000), (order, frames)
    assert not _errors(close_node, since), _errors(close_node, since)


_TCP_PIECES = {
    "bad": struct.pack("!I", 0),  # an empty frame: 3004
    "ping": encode_frame(encode_msgpack({"op": "ping", "id": 5})),
    "eof": EOF_MARK,
}


@pytest.mark.parametrize("together", [True, False], ids=["one-segment", "segments"])
@pytest.mark.parametrize(
    "order", list(itertools.permutations(_TCP_PIECES)), ids=lambda o: "-".join(o)
)
async def test_every_tcp_close_ordering_ends_cleanly(
    close_node: NodeProc, order: tuple[str, ...], together: bool
) -> None:
    assert close_node.tcp is not None
    since = len(close_node.lines)
    pieces = [encode_frame(encode_msgpack({"op": "connect", "id": 1}))]
    pieces += [_TCP_PIECES[p] for p in order]
    segments = [b"".join(pieces), EOF_MARK] if together else pieces
    raw, closed = await exchange(close_node.tcp, segments)
    assert closed, (order, raw)
    assert not _errors(close_node, since), _errors(close_node, since)

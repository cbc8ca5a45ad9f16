"""The transports on loopback: framing, encodings, local size limit."""

from __future__ import annotations

import asyncio

import pytest

from hubbub.client import Client, ReplyError
from hubbub.client.transport import TcpTransport, open_transport
from hubbub.protocol.codec import Encoding, encode_msgpack
from hubbub.protocol.frames import encode_frame
from tests.client.conftest import Setup


async def test_tcp_frames_split_and_coalesced(tcp: Setup) -> None:
    transport = await open_transport(tcp.url)
    assert isinstance(transport, TcpTransport)
    conn = await tcp.server.new_conn.get()
    stream = b"".join(encode_frame(encode_msgpack({"push": "x", "n": n})) for n in range(3))
    # One frame byte by byte, then two frames in one write.
    first = len(encode_frame(encode_msgpack({"push": "x", "n": 0})))
    for i in range(first):
        await conn.send_raw(stream[i : i + 1])
    await conn.send_raw(stream[first:])
    got: list[int] = []
    while len(got) < 3:
        got += [m["n"] for m in await transport.recv()]
    assert got == [0, 1, 2]
    await transport.close()


async def test_tcp_send_is_framed_msgpack(tcp: Setup) -> None:
    transport = await open_transport(tcp.url)
    transport.send({"op": "ping", "id": 1})
    assert await transport.recv() == [{"id": 1, "ok": {}}]
    await transport.close()


async def test_ws_json_carries_bytes_as_b64() -> None:
    from tests.client.conftest import start

    server, url = await start("ws")
    try:
        async with Client(url, encoding="json") as c:
            conn = server.conns[0]
            assert conn.encoding is Encoding.JSON
            sub = await c.subscribe("chat")
            await c.publish("chat", b"\x00\xffbytes")
            raw = conn.raw[-1]
            assert isinstance(raw, str)  # a text message
            assert '{"$b64":"AP9ieXRlcw=="}' in raw
            got = await asyncio.wait_for(anext(sub), 2)
            assert got.data == b"\x00\xffbytes"
    finally:
        await server.stop()


async def test_ws_msgpack_is_binary() -> None:
    from tests.client.conftest import start

    server, url = await start("ws")
    try:
        async with Client(url) as c:
            await c.publish("chat", b"raw")
            assert isinstance(server.conns[0].raw[-1], bytes)
            assert server.conns[0].received[-1]["data"] == b"raw"
    finally:
        await server.stop()


async def test_message_over_server_max_frame_is_refused_locally(setup: Setup) -> None:
    setup.server.limits = {"max_frame": 1024}
    async with setup.client() as c:
        with pytest.raises(ReplyError) as info:
            await c.publish("chat", b"x" * 2000)
        assert info.value.code == 413
        with pytest.raises(ReplyError):
            c.publish_nowait("chat", b"x" * 2000)
        await c.ping()  # the connection is still fine
        assert c.reconnects == 0


async def test_bad_url_scheme() -> None:
    with pytest.raises(ValueError):
        await open_transport("http://127.0.0.1:1/")

"""Admission behind a proxy, in-process with real loopback sockets: the PROXY
header on TCP (v1, v2, byte by byte, LOCAL, bad) decides the address that
``max_connections_per_ip`` counts and ``/api/nodes`` reports (node.describe)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from hubbub.cluster.memory import MemoryBroker
from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.protocol.proxy import encode_v1, encode_v2
from hubbub.server.config import from_mapping
from hubbub.server.node import Node

CONNECT = encode_frame(encode_msgpack({"op": "connect", "id": 1}))


def _run(trusted: list[str], body: Callable[[Node], Awaitable[None]]) -> None:
    config = from_mapping(
        {
            "server": {"tcp": "127.0.0.1:0", "ws": "", "admin": "",
                       "trusted_proxies": trusted, "proxy_protocol": True},
            "limits": {"max_connections_per_ip": 1},
        },
        "test",
    )

    async def main() -> None:
        node = Node(config, MemoryBroker())
        await node.start()
        try:
            await asyncio.wait_for(body(node), 10)
        finally:
            await node.stop()

    uvloop.run(main())


async def _session(node: Node, *chunks: bytes) -> tuple[asyncio.StreamWriter, dict[str, object]]:
    """Open a TCP connection, send ``chunks`` one by one; the first message back."""
    reader, writer = await asyncio.open_connection(*node.addresses["tcp"])
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    decoder = FrameDecoder(2**31)
    while True:
        data = await reader.read(65536)
        assert data, "closed without a message"
        frames = decoder.feed(data)
        if frames:
            return writer, decode_msgpack(frames[0])


def _ok(message: dict[str, object]) -> bool:
    return message.get("id") == 1 and "ok" in message


def test_the_proxy_header_gives_the_address_admission_counts() -> None:
    async def body(node: Node) -> None:
        v2 = encode_v2(("2001:db8::7", 1234), ("127.0.0.1", 7400), tlvs=b"\x04\x00\x01x")
        a, first = await _session(node, encode_v1(("192.0.2.7", 1), ("127.0.0.1", 7400)) + CONNECT)
        b, second = await _session(node, *[bytes([x]) for x in v2], CONNECT)  # byte by byte
        assert _ok(first) and _ok(second)
        assert {c["address"] for c in node.describe()["top_clients"]} == {"192.0.2.7",
                                                                          "2001:db8::7"}
        # The same client again is over max_connections_per_ip = 1, whatever the proxy.
        c, third = await _session(node, encode_v2(("192.0.2.7", 2)) + CONNECT)
        assert third["push"] == "disconnect" and third["code"] == DisconnectCode.CONNECTION_LIMIT
        # LOCAL (a balancer's health check) keeps the proxy's own address.
        d, fourth = await _session(node, encode_v2(None), CONNECT)
        assert _ok(fourth)
        assert "127.0.0.1" in {c["address"] for c in node.describe()["top_clients"]}
        for writer in (a, b, c, d):
            writer.close()

    _run(["127.0.0.1"], body)


def test_a_trusted_peer_without_a_header_is_cut_and_an_untrusted_one_is_not_asked() -> None:
    async def body(node: Node) -> None:
        bare, message = await _session(node, CONNECT)
        assert message["push"] == "disconnect" and message["code"] == DisconnectCode.PROTOCOL_ERROR
        assert "PROXY" in str(message["reason"])
        assert node.describe()["top_clients"] == []
        bare.close()

    _run(["127.0.0.1"], body)

    async def untrusted(node: Node) -> None:
        direct, message = await _session(node, CONNECT)  # no header: not a proxy of ours
        assert _ok(message)
        direct.close()

    _run(["10.0.0.0/8"], untrusted)

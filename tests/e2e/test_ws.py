"""WebSocket clients of a real node: both subprotocols, the JSON default,
cross-transport delivery, size limits and close codes (PROTOCOL.md §1, §5)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from hubbub.protocol.codec import encode_msgpack
from tests.e2e.rawclient import JSON, MSGPACK, RawClient, WsRaw, channel, open_tcp, open_ws
from tests.procs import NodeProc, start_node

CONFIG = """
[limits]
# No rate limit in the way of the bulk test below.
messages_per_second = 1000000
message_burst = 1000000

[namespaces.chat]
history_size = 10
"""

BLOB = b"\x00\x01\x02\xfe\xff" + bytes(range(256))
BLOB_B64 = base64.b64encode(BLOB).decode()


@pytest.fixture(scope="module")
def ws_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


@pytest.mark.parametrize(
    ("offered", "negotiated", "binary"),
    [(MSGPACK, MSGPACK, True), (JSON, JSON, False), (None, None, False)],
    ids=["msgpack", "json", "none-offered"],
)
async def test_ws_pubsub(
    ws_node: NodeProc, offered: str | None, negotiated: str | None, binary: bool
) -> None:
    ch = channel()
    async with await open_ws(ws_node, offered) as c:
        assert isinstance(c, WsRaw)
        assert c.subprotocol == negotiated
        assert c.binary is binary  # WsRaw checks every message's frame type against this
        ok = c.seen[0]["ok"]
        assert ok["node"] == ws_node.node_id and ok["client"]
        await c.ok("subscribe", channel=ch)
        await c.ok("publish", channel=ch, data={"text": "héllo", "n": 1.5, "l": [None, True]})
        pub = await c.push("pub", channel=ch)
        assert pub["data"] == {"text": "héllo", "n": 1.5, "l": [None, True]}
        assert pub["from"]["client"] == ok["client"]
        reply = await c.request("frobnicate")
        assert reply["error"]["code"] == 400


async def test_tcp_publisher_to_ws_subscribers_bytes_intact(ws_node: NodeProc) -> None:
    ch = channel()
    async with (
        await open_ws(ws_node, MSGPACK) as wsb,
        await open_ws(ws_node, JSON) as wsj,
        await open_ws(ws_node, None) as wsn,
        await open_tcp(ws_node) as tcp,
    ):
        for c in (wsb, wsj, wsn):
            await c.ok("subscribe", channel=ch)
        await tcp.ok("publish", channel=ch, data={"blob": BLOB, "s": "x"})
        assert (await wsb.push("pub", channel=ch))["data"] == {"blob": BLOB, "s": "x"}
        for c in (wsj, wsn):
            data = (await c.push("pub", channel=ch))["data"]
            assert data == {"blob": {"$b64": BLOB_B64}, "s": "x"}


async def test_ws_publishers_to_tcp_subscriber_bytes_intact(ws_node: NodeProc) -> None:
    ch = channel()
    async with (
        await open_tcp(ws_node) as tcp,
        await open_ws(ws_node, JSON) as wsj,
        await open_ws(ws_node, MSGPACK) as wsb,
    ):
        await tcp.ok("subscribe", channel=ch)
        await wsj.ok("subscribe", channel=ch)
        # A JSON client sends bytes as {"$b64": ...} (PROTOCOL.md §1).
        await wsj.ok("publish", channel=ch, data={"$b64": BLOB_B64})
        assert (await tcp.push("pub", channel=ch))["data"] == BLOB
        assert (await wsj.push("pub", channel=ch))["data"] == {"$b64": BLOB_B64}
        # A msgpack WebSocket client sends bytes natively.
        await wsb.ok("publish", channel=ch, data=[BLOB])
        assert (await tcp.push("pub", channel=ch))["data"] == [BLOB]
        assert (await wsj.push("pub", channel=ch))["data"] == [{"$b64": BLOB_B64}]


async def test_ws_subscribers_get_publications_in_order(ws_node: NodeProc) -> None:
    ch = channel()
    async with await open_ws(ws_node, JSON) as wsj, await open_tcp(ws_node) as tcp:
        await wsj.ok("subscribe", channel=ch)
        for i in range(300):
            await tcp.send({"op": "publish", "channel": ch, "data": i})
        got = [(await wsj.push("pub", channel=ch))["data"] for _ in range(300)]
        assert got == list(range(300))


async def test_every_subscriber_sees_one_order(ws_node: NodeProc) -> None:
    """Two publishers on two transports race; subscribers on all three formats
    receive the channel's publications in one and the same order (PROTOCOL.md §2)."""
    ch = channel()
    async with (
        await open_tcp(ws_node) as s_tcp,
        await open_ws(ws_node, JSON) as s_json,
        await open_ws(ws_node, MSGPACK) as s_bin,
        await open_tcp(ws_node) as p_tcp,
        await open_ws(ws_node, JSON) as p_ws,
    ):
        subscribers = (s_tcp, s_json, s_bin)
        for c in subscribers:
            await c.ok("subscribe", channel=ch)

        async def fire(client: RawClient, tag: str) -> None:
            for i in range(200):
                await client.send({"op": "publish", "channel": ch, "data": f"{tag}{i}"})

        await asyncio.gather(fire(p_tcp, "t"), fire(p_ws, "w"))
        orders = [
            [(await c.push("pub", channel=ch))["data"] for _ in range(400)] for c in subscribers
        ]
        assert orders[0] == orders[1] == orders[2]
        assert sorted(orders[0]) == sorted([f"t{i}" for i in range(200)] +
                                           [f"w{i}" for i in range(200)])
        for tag in "tw":  # each publisher's own order is kept
            mine = [d for d in orders[0] if d.startswith(tag)]
            assert mine == [f"{tag}{i}" for i in range(200)]


async def test_ws_message_at_max_frame_is_accepted(ws_node: NodeProc) -> None:
    ch = channel()
    async with await open_ws(ws_node, MSGPACK) as c:
        await c.ok("subscribe", channel=ch)
        message: dict[str, Any] = {"op": "publish", "id": 99, "channel": ch, "data": ""}
        message["data"] = "x" * (65536 - len(encode_msgpack(message)) - 2)
        assert len(encode_msgpack(message)) == 65536
        await c.send(message)
        assert "ok" in await c.reply(99)
        assert len((await c.push("pub", channel=ch))["data"]) == len(message["data"])


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_ws_message_over_max_frame_is_closed_1009(
    ws_node: NodeProc, subprotocol: str
) -> None:
    async with await open_ws(ws_node, subprotocol) as c:
        if c.binary:
            await c.send_bytes(b"\x80" + b"x" * 70000)
        else:
            await c.send_text('{"op":"ping","pad":"' + "x" * 70000 + '"}')
        _, closed = await c.closed()
        assert closed.code == 1009, closed


@pytest.mark.parametrize("path", ["/", "/nope", "/ws/extra"])
async def test_ws_wrong_path_is_http_404(ws_node: NodeProc, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await open_ws(ws_node, MSGPACK, path=path, handshake=False)
    assert info.value.response.status_code == 404


async def test_ws_path_with_query_is_accepted(ws_node: NodeProc) -> None:
    async with await open_ws(ws_node, JSON, path="/ws?token=abc") as c:
        assert await c.ok("ping") == {}


async def test_ws_command_before_connect_closes_3004(ws_node: NodeProc) -> None:
    async with await open_ws(ws_node, JSON, handshake=False) as c:
        await c.send({"op": "subscribe", "id": 1, "channel": channel()})
        push, closed = await c.disconnected()
        assert push["code"] == 3004 and push["reconnect"] is False, push
        assert closed.code == 3004, closed


@pytest.mark.parametrize("subprotocol", [MSGPACK, JSON])
async def test_ws_undecodable_message_closes_3004(ws_node: NodeProc, subprotocol: str) -> None:
    async with await open_ws(ws_node, subprotocol) as c:
        if c.binary:
            await c.send_bytes(b"\xc1\xc1")
        else:
            await c.send_text("{not json")
        push, closed = await c.disconnected()
        assert push["code"] == 3004, push
        assert closed.code == 3004, closed


async def test_ws_json_not_an_object_closes_3004(ws_node: NodeProc) -> None:
    async with await open_ws(ws_node, JSON) as c:
        await c.send_text("[1, 2, 3]")
        push, closed = await c.disconnected()
        assert push["code"] == 3004 and closed.code == 3004, (push, closed)


async def test_ws_history_in_json_carries_b64(ws_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(ws_node) as tcp, await open_ws(ws_node, JSON) as wsj:
        await tcp.ok("publish", channel=ch, data=BLOB)
        ok = await wsj.ok("history", channel=ch)
        assert [p["data"] for p in ok["publications"]] == [{"$b64": BLOB_B64}]
        assert ok["offset"] == 1

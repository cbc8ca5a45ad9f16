"""One real ``hubbub serve`` process, raw TCP clients (PROTOCOL.md §1-5).

Most tests share one node (module scope) and use channels of their own; the
keepalive tests use a second node with short timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgpack
import pytest

from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from tests.e2e.rawclient import TcpRaw, channel, open_tcp
from tests.procs import NodeProc, start_node

CONFIG = """
[limits]
# No rate limit in the way of the bulk tests below.
messages_per_second = 1000000
message_burst = 1000000

[namespaces.chat]
history_size = 100
presence = true
join_leave = true
"""

TIMED_CONFIG = """
[limits]
handshake_timeout = 0.5
ping_interval = 0.5
ping_timeout = 0.5
"""


@pytest.fixture(scope="module")
def hub_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def timed_node() -> Iterator[NodeProc]:
    node = start_node(TIMED_CONFIG)
    yield node
    node.stop()


def frames_of(data: bytes) -> list[dict[str, object]]:
    """Decode every complete frame in ``data``."""
    return [decode_msgpack(p) for p in FrameDecoder(2**31).feed(data)]


# -- session and pub/sub ---------------------------------------------------------


async def test_connect_reply(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node, handshake=False) as c:
        ok = await c.connect(client={"name": "e2e", "version": "1"})
        assert isinstance(ok["client"], str) and ok["client"]
        assert ok["node"] == hub_node.node_id
        assert ok["ping"] == 25.0
        assert ok["limits"]["max_frame"] == 65536
        assert await c.ok("ping") == {}


async def test_tcp_pubsub(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node) as sub, await open_tcp(hub_node) as pub:
        assert await sub.ok("subscribe", channel=ch) == {"channel": ch}
        publisher = pub.seen[0]["ok"]["client"]
        assert await pub.ok("publish", channel=ch, data={"text": "hi", "n": [1, 2]}) == {}
        msg = await sub.push("pub")
        assert msg == {
            "push": "pub",
            "channel": ch,
            "data": {"text": "hi", "n": [1, 2]},
            "from": {"client": publisher, "user": ""},
        }
        assert await sub.ok("unsubscribe", channel=ch) == {}
        await pub.ok("publish", channel=ch, data="after")
        await sub.ok("ping")  # a pub after unsubscribe would have come before this reply
        assert not sub.pushes, f"publication after unsubscribe: {list(sub.pushes)}"


async def test_publisher_receives_own_publication(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node) as c:
        me = c.seen[0]["ok"]["client"]
        await c.ok("subscribe", channel=ch)
        await c.ok("publish", channel=ch, data=b"\x00mine")
        msg = await c.push("pub", channel=ch)
        assert msg["data"] == b"\x00mine"
        assert msg["from"]["client"] == me


async def test_2000_fire_and_forget_publishes_arrive_in_order(hub_node: NodeProc) -> None:
    ch = channel()
    total = 2000
    async with await open_tcp(hub_node) as sub, await open_tcp(hub_node) as pub:
        await sub.ok("subscribe", channel=ch)
        for start in range(0, total, 250):
            batch = b"".join(
                encode_frame(encode_msgpack({"op": "publish", "channel": ch, "data": i}))
                for i in range(start, start + 250)
            )
            await pub.send_bytes(batch)
        got = []
        for _ in range(total):
            msg = await sub.push("pub", channel=ch)
            got.append(msg["data"])
        assert got == list(range(total))
        assert await pub.ok("ping") == {}
        errors = [m for m in pub.seen if m.get("push") == "error"]
        assert not errors, errors[:3]


async def test_frame_split_byte_by_byte(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node, handshake=False) as c, await open_tcp(hub_node) as pub:
        for message in (
            {"op": "connect", "id": 1},
            {"op": "subscribe", "id": 2, "channel": ch},
        ):
            for byte in encode_frame(encode_msgpack(message)):
                await c.send_bytes(bytes([byte]))
                await asyncio.sleep(0.001)
            assert "ok" in await c.reply(message["id"])  # type: ignore[arg-type]
        await pub.ok("publish", channel=ch, data="x" * 1000)
        assert (await c.push("pub", channel=ch))["data"] == "x" * 1000


async def test_many_frames_in_one_send(hub_node: NodeProc) -> None:
    ch = channel()
    commands = [
        {"op": "connect", "id": 1},
        {"op": "subscribe", "id": 2, "channel": ch},
        {"op": "publish", "id": 3, "channel": ch, "data": "batched"},
        {"op": "ping", "id": 4},
        {"op": "unsubscribe", "id": 5, "channel": ch},
    ]
    async with await open_tcp(hub_node, handshake=False) as c:
        await c.send_bytes(b"".join(encode_frame(encode_msgpack(m)) for m in commands))
        replies: list[dict[str, object]] = []
        pushes: list[dict[str, object]] = []
        while len(replies) < len(commands):
            msg = await c.recv()
            (replies if "id" in msg else pushes).append(msg)
        c.pushes.extend(pushes)
        assert [r["id"] for r in replies] == [1, 2, 3, 4, 5], "replies out of command order"
        assert all("ok" in r for r in replies), replies
        assert (await c.push("pub", channel=ch))["data"] == "batched"


async def test_frame_of_exactly_max_frame_is_accepted(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node) as c:
        await c.ok("subscribe", channel=ch)
        message: dict[str, object] = {"op": "publish", "id": 50, "channel": ch, "data": ""}
        message["data"] = "y" * (65536 - len(encode_msgpack(message)) - 2)
        payload = encode_msgpack(message)
        assert len(payload) == 65536
        await c.send_bytes(encode_frame(payload))
        assert "ok" in await c.reply(50)
        assert (await c.push("pub", channel=ch))["data"] == message["data"]


# -- command errors --------------------------------------------------------------


async def test_second_connect_is_400(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        reply = await c.request("connect")
        assert reply["error"]["code"] == 400, reply
        assert await c.ok("ping") == {}  # the open session is not cut for it


async def test_unknown_op_is_400(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        reply = await c.request("frobnicate")
        assert reply["error"]["code"] == 400, reply
        assert await c.ok("ping") == {}  # the connection stays usable


@pytest.mark.parametrize("bad", ["has space", "", "x" * 256, "é", 42, None])
async def test_bad_channel_is_400(hub_node: NodeProc, bad: object) -> None:
    async with await open_tcp(hub_node) as c:
        for op, extra in (("subscribe", {}), ("publish", {"data": 1}), ("history", {})):
            reply = await c.request(op, channel=bad, **extra)
            assert reply["error"]["code"] == 400, (op, reply)


async def test_double_subscribe_is_409(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node) as c:
        await c.ok("subscribe", channel=ch)
        reply = await c.request("subscribe", channel=ch)
        assert reply["error"]["code"] == 409, reply


async def test_unsubscribe_when_not_subscribed_is_409(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        reply = await c.request("unsubscribe", channel=channel())
        assert reply["error"]["code"] == 409, reply


async def test_fire_and_forget_failure_is_an_error_push(hub_node: NodeProc) -> None:
    ch = channel()
    async with await open_tcp(hub_node) as c:
        await c.send({"op": "subscribe", "channel": ch})
        await c.send({"op": "subscribe", "channel": ch})
        err = await c.push("error")
        assert (err["code"], err["op"]) == (409, "subscribe"), err
        assert isinstance(err["message"], str) and err["message"]
        await c.send({"op": "publish", "channel": "no spaces", "data": 1})
        err = await c.push("error")
        assert (err["code"], err["op"]) == (400, "publish"), err
        await c.send({"op": "frobnicate"})
        err = await c.push("error")
        assert (err["code"], err["op"]) == (400, "frobnicate"), err
        await c.ok("ping")
        assert not c.pushes, f"unexpected pushes: {list(c.pushes)}"


# -- protocol errors: disconnect 3004 --------------------------------------------


async def test_command_before_connect_is_3004(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node, handshake=False) as c:
        await c.send({"op": "subscribe", "id": 1, "channel": channel()})
        push, _ = await c.disconnected()
        assert push["code"] == 3004 and push["reconnect"] is False, push


async def test_oversized_length_header_closes_without_waiting_for_body(
    hub_node: NodeProc,
) -> None:
    for header in (b"\xff\xff\xff\xff", (65537).to_bytes(4, "big")):
        async with await open_tcp(hub_node, handshake=False) as c:
            await c.send_bytes(header)  # no body follows: the server must not wait for it
            data = await c.eof()
            messages = frames_of(data)
            assert len(messages) == 1, messages
            push = messages[0]
            assert push["push"] == "disconnect", push
            assert push["code"] == 3004 and push["reason"] == "frame too large", push


async def test_oversized_frame_after_connect_is_3004(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        await c.send_bytes((1 << 20).to_bytes(4, "big"))
        push, _ = await c.disconnected()
        assert push["code"] == 3004 and push["reason"] == "frame too large", push


async def test_commands_before_a_bad_header_in_one_send_are_handled(hub_node: NodeProc) -> None:
    """However TCP splits them, what a client sent before its mistake is
    processed: the ping's reply arrives, then the disconnect for the header."""
    async with await open_tcp(hub_node) as c:
        ping = encode_frame(msgpack.packb({"op": "ping", "id": 41}))
        await c.send_bytes(ping + (1 << 20).to_bytes(4, "big"))
        messages, _ = await c.closed()
        assert [m.get("id") for m in messages if "id" in m] == [41], messages
        assert messages[-1]["push"] == "disconnect", messages
        assert messages[-1]["code"] == 3004 and messages[-1]["reason"] == "frame too large"


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(b"\xc1\xc1\xc1"),  # 0xc1 is never valid msgpack
        encode_frame(msgpack.packb([1, 2, 3])),  # not a map
        encode_frame(b"\x00\x00"),  # one int, then trailing bytes
        b"\x00\x00\x00\x00",  # an empty frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP on the TCP port
    ],
    ids=["undecodable", "not-a-map", "trailing", "empty", "http"],
)
async def test_garbage_is_3004(hub_node: NodeProc, garbage: bytes) -> None:
    async with await open_tcp(hub_node, handshake=False) as c:
        await c.send_bytes(garbage)
        push, _ = await c.disconnected()
        assert push["code"] == 3004 and push["reconnect"] is False, push


async def test_garbage_after_connect_is_3004(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        await c.send_bytes(encode_frame(b"\xc1"))
        push, _ = await c.disconnected()
        assert push["code"] == 3004, push


# -- history and recovery ----------------------------------------------------------


async def test_recover_since_gets_exactly_the_missed_publications(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as pub, await open_tcp(hub_node) as sub:
        positions = [await pub.ok("publish", channel=ch, data=i) for i in range(1, 8)]
        assert [p["offset"] for p in positions] == list(range(1, 8))
        epoch = positions[0]["epoch"]
        assert all(p["epoch"] == epoch for p in positions)
        since = {"offset": 3, "epoch": epoch}
        ok = await sub.ok("subscribe", channel=ch, recover=True, since=since)
        assert ok["recovered"] is True, ok
        assert (ok["offset"], ok["epoch"]) == (7, epoch)
        assert [p["data"] for p in ok["publications"]] == [4, 5, 6, 7]
        assert [p["offset"] for p in ok["publications"]] == [4, 5, 6, 7]
        assert all(p["push"] == "pub" and p["channel"] == ch for p in ok["publications"])
        # Live publications continue after the recovered ones, without duplicates.
        await pub.ok("publish", channel=ch, data=8)
        live = await sub.push("pub", channel=ch)
        assert (live["data"], live["offset"]) == (8, 8)
        await sub.ok("ping")
        assert not sub.pushes, list(sub.pushes)


async def test_recover_with_wrong_epoch_is_not_recovered(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as c:
        for i in range(3):
            last = await c.ok("publish", channel=ch, data=i)
        ok = await c.ok("subscribe", channel=ch, recover=True, since={"offset": 1, "epoch": "nope"})
        assert ok["recovered"] is False, ok
        assert (ok["offset"], ok["epoch"]) == (3, last["epoch"])
        assert not ok.get("publications"), ok


async def test_subscribe_to_history_channel_reports_position(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as c:
        await c.ok("publish", channel=ch, data="one")
        ok = await c.ok("subscribe", channel=ch)
        assert ok["channel"] == ch and ok["offset"] == 1 and isinstance(ok["epoch"], str), ok


async def test_history(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as c:
        for i in range(1, 6):
            last = await c.ok("publish", channel=ch, data=i)
        epoch = last["epoch"]
        ok = await c.ok("history", channel=ch, limit=2)
        assert [p["data"] for p in ok["publications"]] == [4, 5]
        assert (ok["offset"], ok["epoch"]) == (5, epoch)
        ok = await c.ok("history", channel=ch, since={"offset": 1, "epoch": epoch}, limit=2)
        assert [p["offset"] for p in ok["publications"]] == [2, 3]
        ok = await c.ok("history", channel=ch)
        assert [p["data"] for p in ok["publications"]] == [1, 2, 3, 4, 5]


async def test_history_with_gone_position_is_410(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as c:
        await c.ok("publish", channel=ch, data=1)
        reply = await c.request("history", channel=ch, since={"offset": 0, "epoch": "wrong"})
        assert reply["error"]["code"] == 410, reply


async def test_history_without_history_is_404(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        for ch in (channel(), channel("other:")):
            reply = await c.request("history", channel=ch)
            assert reply["error"]["code"] == 404, reply


# -- presence ---------------------------------------------------------------------


async def test_presence_and_join_leave(hub_node: NodeProc) -> None:
    ch = channel("chat:")
    async with await open_tcp(hub_node) as a, await open_tcp(hub_node) as b:
        a_id, b_id = a.seen[0]["ok"]["client"], b.seen[0]["ok"]["client"]
        await a.ok("subscribe", channel=ch)
        await b.ok("subscribe", channel=ch)
        join = await a.push("join", channel=ch)
        assert join == {"push": "join", "channel": ch, "client": b_id, "user": ""}
        clients = (await a.ok("presence", channel=ch))["clients"]
        assert set(clients) == {a_id, b_id}
        assert clients[b_id]["user"] == ""
        await b.ok("ping")
        assert not [m for m in b.pushes if m.get("push") == "join"], "b got its own join"

        await b.ok("unsubscribe", channel=ch)
        leave = await a.push("leave", channel=ch)
        assert leave == {"push": "leave", "channel": ch, "client": b_id, "user": ""}
        assert set((await a.ok("presence", channel=ch))["clients"]) == {a_id}

        c = await open_tcp(hub_node)
        c_id = c.seen[0]["ok"]["client"]
        await c.ok("subscribe", channel=ch)
        await a.push("join", client=c_id)
        await c.close()  # a dropped connection leaves too
        await a.push("leave", client=c_id)
        assert set((await a.ok("presence", channel=ch))["clients"]) == {a_id}


async def test_presence_without_presence_is_404(hub_node: NodeProc) -> None:
    async with await open_tcp(hub_node) as c:
        reply = await c.request("presence", channel=channel())
        assert reply["error"]["code"] == 404, reply


# -- keepalive and handshake timers ------------------------------------------------


async def test_idle_socket_gets_3004_at_handshake_timeout(timed_node: NodeProc) -> None:
    async with await open_tcp(timed_node, handshake=False) as c:
        push, _ = await c.disconnected(timeout=5)
        assert push["code"] == 3004 and push["reconnect"] is False, push


async def test_ping_push_answered_with_pong_keeps_connection(timed_node: NodeProc) -> None:
    async with await open_tcp(timed_node) as c:
        for _ in range(3):
            await c.push("ping", timeout=5)
            await c.send({"op": "pong"})
        assert await c.ok("ping") == {}
        assert not [m for m in c.seen if m.get("push") in ("disconnect", "error")], c.seen


async def test_no_pong_is_stale_3003(timed_node: NodeProc) -> None:
    async with await open_tcp(timed_node) as c:
        push, _ = await c.disconnected(timeout=5)
        assert push["code"] == 3003 and push["reconnect"] is True, push
        assert any(m.get("push") == "ping" for m in c.seen), "disconnected without a ping"


# -- the client library against a real node ----------------------------------------


async def test_client_library_round_trip(hub_node: NodeProc) -> None:
    from hubbub.client import Client

    ch = channel("chat:")
    for url in (hub_node.tcp_url, hub_node.ws_url):
        async with Client(url) as c:
            sub = await c.subscribe(ch)
            await c.publish(ch, {"via": url})
            it = aiter(sub)
            pub = await asyncio.wait_for(anext(it), 5)
            assert pub.data == {"via": url}


async def test_raw_client_type(hub_node: NodeProc) -> None:
    """The helper itself: a TcpRaw round trip of bytes through the server."""
    async with await open_tcp(hub_node) as c:
        assert isinstance(c, TcpRaw)
        ch = channel()
        await c.ok("subscribe", channel=ch)
        await c.ok("publish", channel=ch, data={"b": bytes(range(256))})
        assert (await c.push("pub"))["data"] == {"b": bytes(range(256))}

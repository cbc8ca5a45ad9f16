"""Limits on everything a client can repeat or make large, against a real node
(docs/limits.md): the control budget, the per-IP connection rate, replies
bounded by max_frame, client name sizes, continuation frames counted from the
first byte, and the open-files reserve."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame
from hubbub.protocol.wsclient import OP_CLOSE, OP_TEXT, FrameParser, client_frame, parse_close
from tests.e2e.probes import http_get, metric, rss_bytes
from tests.e2e.rawclient import channel, open_tcp
from tests.e2e.test_close_paths import exchange, handshake, ws_reply
from tests.procs import NodeProc, start_node

CONFIG = """
[limits]
max_frame = 4096
messages_per_second = 50
message_burst = 50
max_client_name = 32
max_connects_per_ip_per_second = 50

[namespaces.feed]
history_size = 100

[namespaces.room]
presence = true
"""


@pytest.fixture(scope="module")
def repeat_node() -> Iterator[NodeProc]:
    node = start_node(CONFIG)
    yield node
    node.stop()


async def test_pong_and_ping_floods_spend_a_control_budget(repeat_node: NodeProc) -> None:
    """pong commands and WebSocket pings used to be free: two flooding clients
    raised a third client's round trip from 0.7 ms to 0.5-1 s."""
    before = metric(repeat_node, "hubbub_limited_total", what="control")
    client = await open_tcp(repeat_node)
    await client.send_bytes(encode_frame(encode_msgpack({"op": "pong"})) * 500)
    assert repeat_node.ws is not None
    pings = client_frame(b"", 0x9) * 500
    await exchange(repeat_node.ws, [handshake(repeat_node), pings], wait=0.5)
    await asyncio.sleep(0.3)
    assert metric(repeat_node, "hubbub_limited_total", what="control") >= before + 2
    await client.close()


async def test_reconnecting_does_not_reset_the_rate(repeat_node: NodeProc) -> None:
    """The command bucket is per connection; max_connects_per_ip_per_second
    stops a client from getting a fresh one 68k times a second."""
    assert repeat_node.tcp is not None
    codes = []
    for _ in range(80):
        reader, writer = await asyncio.open_connection(*repeat_node.tcp)
        writer.write(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
        data = await asyncio.wait_for(reader.read(65536), 5)
        codes.append(decode_first(data))
        writer.close()
    refused = [c for c in codes if c == 3007]
    assert refused and codes[0] == "ok", codes
    assert metric(repeat_node, "hubbub_limited_total", what="max_connects_per_ip_per_second")


def decode_first(data: bytes) -> object:
    from hubbub.protocol.codec import decode_msgpack
    from hubbub.protocol.frames import FrameDecoder

    (payload, *_) = FrameDecoder().feed(data)
    message = decode_msgpack(payload)
    return "ok" if "ok" in message else message.get("code")


async def test_history_replies_are_paged_within_max_frame(repeat_node: NodeProc) -> None:
    """A history reply used to be as large as the history (6.6 MB to a client
    that does not read; 8 MB that a stock client closes with 1009)."""
    await asyncio.sleep(1.0)  # the per-IP connection bucket refills
    name = channel("feed:")
    client = await open_tcp(repeat_node)
    for i in range(30):
        await client.ok("publish", channel=name, data="x" * 400 + str(i))
        await asyncio.sleep(0.02)  # within the command rate
    reply = await client.request("history", channel=name, limit=30)
    page = reply["ok"]
    assert page["more"] is True and 0 < len(page["publications"]) < 30, reply
    assert len(encode_msgpack(reply)) <= 4096
    # Without since: the newest; with since the next page follows on.
    assert page["publications"][-1]["offset"] == 30
    first = page["publications"][0]["offset"]
    since = {"offset": 0, "epoch": page["epoch"]}
    older = (await client.request("history", channel=name, since=since, limit=30))["ok"]
    assert older["publications"][0]["offset"] == 1 and older["more"] is True
    assert older["publications"][-1]["offset"] < first + len(page["publications"])
    await client.close()


async def test_a_reply_that_cannot_be_paged_is_413(repeat_node: NodeProc) -> None:
    await asyncio.sleep(1.0)
    name = channel("feed:")
    client = await open_tcp(repeat_node)
    await client.ok("publish", channel=name, data="y" * 3950)  # fits a frame, not a reply
    reply = await client.request("history", channel=name)
    assert reply["error"]["code"] == 413, reply
    await client.close()


async def test_client_names_and_presence_are_bounded(repeat_node: NodeProc) -> None:
    """60 KB client names used to make one presence reply 2.4 MB."""
    await asyncio.sleep(1.0)
    client = await open_tcp(repeat_node, handshake=False)
    reply = await client.request("connect", client={"name": "n" * 33})
    assert reply["error"]["code"] == 400, reply
    room = channel("room:")
    members = []
    for i in range(60):
        member = await open_tcp(repeat_node, client={"name": f"{i:02d}" + "m" * 30})
        await member.ok("subscribe", channel=room)
        members.append(member)
        await asyncio.sleep(0.025)  # under max_connects_per_ip_per_second
    reply = await members[0].request("presence", channel=room)
    assert reply["error"]["code"] == 413, reply  # 60 x ~85 bytes > 4096
    for member in members:
        await member.close()


async def test_empty_continuation_frames_count_from_the_first_byte(
    repeat_node: NodeProc,
) -> None:
    """Empty continuation frames used to hold memory until the keepalive cut
    (+42-50 MB per connection): each frame now counts its header."""
    await asyncio.sleep(1.0)
    assert repeat_node.ws is not None
    start = client_frame(b"{", OP_TEXT)
    start = bytes([start[0] & 0x7F]) + start[1:]  # FIN off: a fragmented message
    empty = client_frame(b"", 0x0)
    empty = bytes([empty[0] & 0x7F]) + empty[1:]
    before = rss_bytes(repeat_node.proc.pid)
    raw, _ = await exchange(
        repeat_node.ws,
        [handshake(repeat_node), text_connect(), start] + [empty * 5000] * 20,
    )
    status, frames = ws_reply(raw)
    closes = [parse_close(p)[0] for op, p in frames if op == OP_CLOSE]
    assert status == 101 and closes == [1009], frames
    assert rss_bytes(repeat_node.proc.pid) - before < 20 * 2**20


def text_connect() -> bytes:
    return client_frame(json.dumps({"op": "connect"}).encode(), OP_TEXT)


async def test_near_the_fd_limit_clients_get_3007_and_healthz_answers() -> None:
    """At the fd limit new clients and /healthz used to be reset silently,
    with nothing logged."""
    node = start_node("[limits]\nadmin_max_connections = 4\n", nofile=(96, 96))
    try:
        clients = []
        codes = []
        for _ in range(90):
            try:
                assert node.tcp is not None
                reader, writer = await asyncio.open_connection(*node.tcp)
            except OSError:
                break
            writer.write(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
            data = await asyncio.wait_for(reader.read(65536), 5)
            codes.append(decode_first(data) if data else "reset")
            if codes[-1] == "ok":
                clients.append(writer)
            else:
                writer.close()  # told to come back later: a client goes away
        assert "ok" in codes and 3007 in codes and "reset" not in codes, codes
        status, _ = await asyncio.to_thread(http_get, node.admin_url + "/healthz")
        assert status == 200
        await asyncio.sleep(1.2)  # the sweeper's aggregated line
        lines = [x for x in node.lines if "what=fd_limit" in x]
        assert lines and "level=error" in lines[0], node.log_text()
        for writer in clients:
            writer.close()
    finally:
        node.stop()


_ = FrameParser  # the frames of ws_reply

"""Publishes in flight (server.commands, ``Broker.pipelined``): through Redis, a
connection's publishes are not answered one round trip at a time, yet every
reply still comes in the order the commands were sent (PROTOCOL.md §2), errors
and other commands included, and every publication reaches its subscriber once,
in the order it was published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame
from tests.e2e.rawclient import TcpRaw, open_tcp
from tests.procs import NodeProc, RedisProc

CONFIG = """
[limits]
messages_per_second = 100000
message_burst = 100000

[namespaces.chat]
history_size = 1000

[namespaces.closed]
client_publish = false
"""

#: More than MAX_INFLIGHT (64): the connection must also wait for the oldest.
COUNT = 300


def _batch(commands: list[dict[str, Any]]) -> bytes:
    """Every command in one write: the node reads them in a few large chunks."""
    return b"".join(encode_frame(encode_msgpack(c)) for c in commands)


async def _replies(client: TcpRaw, count: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < count:
        message = await client.recv()
        if "id" in message or message.get("push") == "error":
            out.append(message)
    return out


async def test_pipelined_publishes_answer_in_order(
    redis_server: RedisProc, node_factory: Callable[..., NodeProc]
) -> None:
    node = node_factory(CONFIG, redis=[redis_server.url])
    publisher = await open_tcp(node)
    subscriber = await open_tcp(node)
    try:
        await subscriber.ok("subscribe", channel="chat:order")
        commands: list[dict[str, Any]] = []
        for i in range(COUNT):
            cid = 100 + i
            if i % 50 == 10:  # refused in the handler: 403 in its place
                commands.append({"op": "publish", "id": cid, "channel": "closed:x", "data": i})
            elif i % 50 == 20:  # another op between publishes
                commands.append({"op": "history", "id": cid, "channel": "chat:order", "limit": 1})
            elif i % 50 == 30:  # a bad command: 400 in its place
                commands.append({"op": "publish", "id": cid, "channel": "bad channel!"})
            elif i % 50 == 40:  # fire-and-forget, refused: an error push in its place
                commands.append({"op": "publish", "channel": "closed:y", "data": i})
            else:
                commands.append({"op": "publish", "id": cid, "channel": "chat:order", "data": i})
        await publisher.send_bytes(_batch(commands))
        replies = await _replies(publisher, COUNT)

        expected_ids = [c.get("id") for c in commands]
        assert [r.get("id") for r in replies] == expected_ids
        offsets = []
        for command, reply in zip(commands, replies, strict=True):
            if command.get("channel") == "chat:order" and command["op"] == "publish":
                offsets.append(reply["ok"]["offset"])
            elif command["op"] == "history":
                assert "ok" in reply, reply
                assert reply["ok"]["offset"] == offsets[-1]  # every publish before it is in
            elif command.get("channel", "").startswith("closed:"):
                error = reply["error"] if "id" in command else reply
                assert error["code"] == 403, reply
            else:
                assert reply["error"]["code"] == 400, reply
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)

        published = [
            c["data"] for c in commands if c["op"] == "publish" and c.get("channel") == "chat:order"
        ]
        got = []
        while len(got) < len(published):
            push = await subscriber.push("pub", channel="chat:order")
            got.append(push["data"])
        assert got == published
    finally:
        await publisher.close()
        await subscriber.close()

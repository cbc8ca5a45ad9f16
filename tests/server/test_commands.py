"""server.commands on a fake transport: the op table, dispatch, and each step a
command passes (parse, rate limit, session state, handler, reply)."""

from __future__ import annotations

import asyncio
from typing import Any

from hubbub.protocol import messages
from hubbub.protocol.codes import DisconnectCode, ErrorCode
from hubbub.server.commands import HANDLERS, OPS, Commands
from tests.server.fakes import FakeTransport, connect, node_parts

#: Every op of PROTOCOL.md §2.
PROTOCOL_OPS = {
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ping",
    "pong",
    "refresh",
}


def test_the_table_has_one_handler_per_op_of_the_protocol() -> None:
    assert set(HANDLERS) == PROTOCOL_OPS
    assert set(OPS.values()) == PROTOCOL_OPS
    commands = {
        cls
        for cls in vars(messages).values()
        if isinstance(cls, type)
        and issubclass(cls, messages.Command)
        and cls is not messages.Command
    }
    assert set(OPS) == commands
    assert all(HANDLERS[op] is getattr(Commands, op) for op in PROTOCOL_OPS)


async def _replies(transport: FakeTransport) -> list[dict[str, Any]]:
    await asyncio.sleep(0)  # the flush at the end of the loop iteration
    got = transport.messages()
    transport.writes.clear()
    return got


async def test_connect_then_subscribe_and_publish() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        handle = node.commands.handle
        await handle(conn, {"op": "connect", "id": 1})
        (reply,) = await _replies(transport)
        ok = reply["ok"]
        assert reply["id"] == 1 and ok["node"] == node.node_id and ok["client"] == conn.client_id
        assert ok["limits"]["max_subscriptions"] == node.config.limits.max_subscriptions
        await handle(conn, {"op": "subscribe", "id": 2, "channel": "room"})
        assert await _replies(transport) == [{"id": 2, "ok": {"channel": "room"}}]
        await handle(conn, {"op": "publish", "id": 3, "channel": "room", "data": "hi"})
        got = await _replies(transport)
        assert {"id": 3, "ok": {}} in got
        (pub,) = [m for m in got if m.get("push") == "pub"]
        assert pub["data"] == "hi" and pub["from"]["client"] == conn.client_id


async def test_a_command_before_connect_is_a_3004() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        await node.commands.handle(conn, {"op": "subscribe", "id": 1, "channel": "room"})
        (message,) = await _replies(transport)
        assert message["push"] == "disconnect" and message["code"] == DisconnectCode.PROTOCOL_ERROR
        assert not conn.writable


async def test_a_bad_command_after_connect_is_a_400_and_the_connection_stays() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        await node.commands.handle(conn, {"op": "connect", "id": 1})
        await _replies(transport)
        await node.commands.handle(conn, {"op": "nonsense", "id": 2})
        (reply,) = await _replies(transport)
        assert reply["id"] == 2 and reply["error"]["code"] == ErrorCode.BAD_REQUEST
        assert conn.writable


async def test_the_rate_limit_refuses_with_429_but_never_counts_pong() -> None:
    limits = {"messages_per_second": 1.0, "message_burst": 2}
    async with node_parts(limits=limits) as node:
        conn, transport, _ = connect(node)
        handle = node.commands.handle
        await handle(conn, {"op": "connect", "id": 1})
        for _ in range(5):
            await handle(conn, {"op": "pong"})
        await handle(conn, {"op": "ping", "id": 2})  # the second token
        await handle(conn, {"op": "ping", "id": 3})  # none left
        got = await _replies(transport)
        assert [m["id"] for m in got if "ok" in m] == [1, 2]
        (refused,) = [m for m in got if "error" in m]
        assert refused["id"] == 3 and refused["error"]["code"] == ErrorCode.RATE_LIMITED
        assert refused["error"]["retry_after"] > 0


async def test_a_failing_handler_answers_500(monkeypatch: Any) -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        await node.commands.handle(conn, {"op": "connect", "id": 1})
        await _replies(transport)

        async def boom(self: Commands, conn: object, cmd: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setitem(HANDLERS, "ping", boom)
        await node.commands.handle(conn, {"op": "ping", "id": 2})
        (reply,) = await _replies(transport)
        error = {"code": ErrorCode.INTERNAL, "message": "internal error"}
        assert reply == {"id": 2, "error": error}
        assert conn.writable


async def test_closing_leaves_every_channel() -> None:
    async with node_parts() as node:
        conn, _, _ = connect(node)
        await node.commands.handle(conn, {"op": "connect", "id": 1})
        for i, channel in enumerate(("a", "b"), 2):
            await node.commands.handle(conn, {"op": "subscribe", "id": i, "channel": channel})
        assert node.hub.subscriber_count("a") == 1 and conn.subs == {"a": None, "b": None}
        conn.closed()
        assert conn.subs == {} and node.hub.subscriber_count("a") == 0

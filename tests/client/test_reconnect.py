"""Connection loss, server disconnects, re-subscribe with recovery, lag."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hubbub.client import ChannelEvent, Client, Disconnected, StreamPosition, Subscription
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.messages import push_lag, push_pub, reply_error, reply_ok
from tests.client.conftest import Setup, start
from tests.client.fakeserver import FakeConn, FakeServer


async def take(sub: Subscription, n: int) -> list[Any]:
    return [(await asyncio.wait_for(anext(sub), 2)).data for _ in range(n)]


async def command(server: FakeServer, op: str, *, on: int = 1) -> tuple[FakeConn, dict[str, Any]]:
    """The next command ``op`` the server answered on connection number ``on`` or later."""
    while True:
        conn, msg = await asyncio.wait_for(server.commands.get(), 2)
        if msg["op"] == op and conn.number >= on:
            return conn, msg


async def test_resubscribe_recovers_in_order_without_duplicates(setup: Setup) -> None:
    server = setup.server
    async with setup.client() as c:
        sub = await c.subscribe("h:chat", recover=True)
        await server.publish("h:chat", "a")
        await server.publish("h:chat", "b")
        assert await take(sub, 2) == ["a", "b"]

        server.conns[0].drop()
        await server.publish("h:chat", "c", deliver=False)  # missed while away
        await server.publish("h:chat", "d", deliver=False)

        conn, msg = await command(server, "subscribe", on=2)
        assert conn is server.conns[1]
        assert msg["recover"] is True
        assert msg["since"] == {"offset": 2, "epoch": "epoch-1"}
        await conn.send(server.history["h:chat"][-1])  # "d" again, live: a duplicate
        await server.publish("h:chat", "e")
        assert await take(sub, 3) == ["c", "d", "e"]
        assert sub.recovered is True
        assert sub.position == StreamPosition(5, "epoch-1")
        assert c.reconnects == 1
        assert c.last_disconnect is not None and c.last_disconnect.code is None
        assert sub.pending == 0


async def test_recovery_failure_resets(tcp: Setup) -> None:
    events: list[ChannelEvent] = []
    async with tcp.client() as c:
        sub = await c.subscribe("h:chat", on_event=events.append)
        await tcp.server.publish("h:chat", "a")
        assert await take(sub, 1) == ["a"]
        tcp.server.conns[0].drop()
        tcp.server.epoch = "epoch-2"  # history lost while away
        tcp.server.history.clear()
        await command(tcp.server, "subscribe", on=2)
        await tcp.server.publish("h:chat", "fresh")
        assert await take(sub, 1) == ["fresh"]
        assert sub.recovered is False
        assert events == [ChannelEvent("reset", "h:chat")]
        assert sub.position == StreamPosition(1, "epoch-2")


async def test_a_recovery_that_does_not_fit_one_reply_is_read_from_history(tcp: Setup) -> None:
    """``recovered: false`` with the history still there (what was missed is more
    than one ``max_frame`` reply holds: protocol-additions.md "Sizes and
    paging"): the client reads it from ``history``, page by page, and no reset."""
    server = tcp.server
    server.history_cap = 2
    events: list[ChannelEvent] = []

    async def too_big(conn: FakeConn, msg: dict[str, Any]) -> bool:
        if msg["op"] == "subscribe" and "since" in msg:
            conn.channels.add(msg["channel"])
            server.subs.setdefault(msg["channel"], set()).add(conn)
            reply = {"channel": msg["channel"], "recovered": False, "publications": []}
            reply.update(offset=server.top(msg["channel"]), epoch=server.epoch)
            await conn.send(reply_ok(msg["id"], reply))
            return True
        return False

    async with tcp.client() as c:
        sub = await c.subscribe("h:chat", on_event=events.append)
        await server.publish("h:chat", "a")
        assert await take(sub, 1) == ["a"]
        server.hook = too_big
        server.conns[0].drop()
        for data in "bcde":
            await server.publish("h:chat", data, deliver=False)
        await command(server, "subscribe", on=2)
        await server.publish("h:chat", "f")  # live, held until the gap is read
        assert await take(sub, 5) == ["b", "c", "d", "e", "f"]
        assert sub.recovered is True and events == []
        assert sub.position == StreamPosition(6, "epoch-1")


async def test_disconnect_push_after_is_honoured(setup: Setup) -> None:
    async with setup.client() as c:
        sub = await c.subscribe("chat")
        dropped = time.monotonic()
        await setup.server.conns[0].disconnect(DisconnectCode.DRAINING, after=150)
        conn = await asyncio.wait_for(setup.server.new_conn.get(), 2)  # the first one
        conn = await asyncio.wait_for(setup.server.new_conn.get(), 2)
        assert time.monotonic() - dropped >= 0.15
        assert c.last_disconnect is not None
        ld = c.last_disconnect
        assert (ld.code, ld.reconnect, ld.after) == (3001, True, 150)
        await command(setup.server, "subscribe", on=2)
        await conn.send(push_pub("chat", "after the move"))
        assert await take(sub, 1) == ["after the move"]


async def test_no_reconnect_after_protocol_error(setup: Setup) -> None:
    async with setup.client() as c:
        sub = await c.subscribe("chat")
        await setup.server.conns[0].disconnect(DisconnectCode.PROTOCOL_ERROR)
        with pytest.raises(Disconnected) as info:
            await asyncio.wait_for(anext(sub), 2)
        assert info.value.code == 3004 and info.value.reconnect is False
        assert c.closed and not c.connected
        assert c.last_disconnect is info.value
        with pytest.raises(Disconnected):
            await c.publish("chat", 1)
        with pytest.raises(Disconnected):
            await c.connect()
    assert len(setup.server.conns) == 1


async def test_ws_close_code_without_push_is_final() -> None:
    server, url = await start("ws")
    try:
        async with Client(url) as c:
            sub = await c.subscribe("chat")
            await server.conns[0].disconnect(DisconnectCode.UNAUTHORIZED, push=False)
            with pytest.raises(Disconnected) as info:
                await asyncio.wait_for(anext(sub), 2)
            assert info.value.code == 3005
    finally:
        await server.stop()


async def test_reconnect_false_stops_on_any_loss(tcp: Setup) -> None:
    async with tcp.client(reconnect=False) as c:
        sub = await c.subscribe("chat")
        tcp.server.conns[0].drop()
        with pytest.raises(Disconnected):
            await asyncio.wait_for(anext(sub), 2)
        assert c.closed


async def test_commands_wait_for_the_reconnect(tcp: Setup) -> None:
    async with tcp.client(backoff_base=0.05) as c:
        tcp.server.conns[0].drop()
        await asyncio.wait_for(tcp.server.conns[0].closed.wait(), 2)
        await asyncio.sleep(0.01)
        assert await c.publish("chat", "queued") is None
        assert len(tcp.server.conns) == 2


async def test_urls_are_tried_round_robin() -> None:
    one, url1 = await start("tcp")
    two, url2 = await start("tcp")
    try:
        async with Client([url1, url2], backoff_base=0.01) as c:
            sub = await c.subscribe("chat")
            assert len(one.conns) == 1 and not two.conns
            await one.stop()  # node 1 goes away for good
            conn, _ = await command(two, "subscribe")
            await conn.send(push_pub("chat", "from node 2"))
            assert await take(sub, 1) == ["from node 2"]
    finally:
        await two.stop()


async def test_first_url_down_uses_the_next() -> None:
    two, url2 = await start("tcp")
    try:
        async with Client(["tcp://127.0.0.1:1", url2]) as c:
            assert c.info["client"] == "client-1"
    finally:
        await two.stop()


async def test_lag_recovers_from_history(setup: Setup) -> None:
    server = setup.server
    events: list[ChannelEvent] = []
    async with setup.client() as c:
        sub = await c.subscribe("h:feed", on_event=events.append)
        server.history_cap = 2  # the gap takes two pages
        conn = server.conns[0]
        await server.publish("h:feed", 1)
        assert await take(sub, 1) == [1]
        for i in (2, 3, 4):
            await server.publish("h:feed", i, deliver=False)  # skipped by the server
        await conn.send(push_lag("h:feed", 3))
        await server.publish("h:feed", 5)  # live, before the history reply
        _, msg = await command(server, "history")
        assert msg["since"] == {"offset": 1, "epoch": "epoch-1"}
        _, msg = await command(server, "history")
        assert msg["since"] == {"offset": 3, "epoch": "epoch-1"}
        assert await take(sub, 4) == [2, 3, 4, 5]
        assert sub.lagged == 3
        assert events == [ChannelEvent("lag", "h:feed", dropped=3)]


async def test_silent_server_is_detected_by_the_watchdog() -> None:
    server, url = await start("tcp", ping=0.05)
    try:
        async with Client(url, timeout=0.2, backoff_base=0.01) as c:
            await asyncio.wait_for(server.new_conn.get(), 2)
            await asyncio.wait_for(server.new_conn.get(), 2)  # no traffic -> reconnect
            assert c.last_disconnect is not None and c.last_disconnect.reconnect
    finally:
        await server.stop()


async def test_close_while_reconnecting(tcp: Setup) -> None:
    c = tcp.client(backoff_base=5.0)
    await c.connect()
    sub = await c.subscribe("chat")
    await tcp.server.stop()
    await asyncio.wait_for(tcp.server.conns[0].closed.wait(), 2)
    await asyncio.sleep(0.01)
    assert not c.connected
    await asyncio.wait_for(c.close(), 1)
    assert [p async for p in sub] == []
    assert isinstance(c.last_disconnect, Disconnected)


async def test_in_flight_command_fails_when_the_connection_drops(setup: Setup) -> None:
    async def swallow(conn: FakeConn, msg: dict[str, Any]) -> bool:
        if msg["op"] == "publish" and conn.number == 1:
            conn.drop()
            return True
        return False

    setup.server.hook = swallow
    async with setup.client() as c:
        with pytest.raises(Disconnected):
            await c.publish("chat", "lost?")
        assert await c.publish("chat", "again") is None  # on the new connection
        assert c.reconnects == 1


async def test_lag_recovery_refused_with_503_is_retried_not_skipped(setup: Setup) -> None:
    """A node back from a broker outage may answer the recovery's history with 503
    for a moment: the gap is still filled, never silently skipped."""
    server = setup.server
    refused = 0

    async def unavailable_once(conn: FakeConn, msg: dict[str, Any]) -> bool:
        nonlocal refused
        if msg["op"] == "history" and refused == 0:
            refused += 1
            await conn.send(reply_error(msg["id"], 503, "broker unavailable"))
            return True
        return False

    events: list[ChannelEvent] = []
    async with setup.client(backoff_base=0.01) as c:
        sub = await c.subscribe("h:feed", on_event=events.append)
        await server.publish("h:feed", 1)
        assert await take(sub, 1) == [1]
        server.hook = unavailable_once
        for i in (2, 3):
            await server.publish("h:feed", i, deliver=False)  # skipped by the server
        await server.conns[0].send(push_lag("h:feed", 2))
        await server.publish("h:feed", 4)  # live, held until the gap is filled
        assert await take(sub, 3) == [2, 3, 4]
        assert refused == 1
        assert [e.kind for e in events] == ["lag"]  # no reset: nothing was lost

"""Client commands, replies and pushes against the fake server, on every transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hubbub.client import (
    ChannelEvent,
    Disconnected,
    Publication,
    ReplyError,
    ReplyTimeout,
    StreamPosition,
)
from hubbub.protocol.messages import push_join, push_leave, push_ping, reply_error, reply_ok
from tests.client.conftest import Setup
from tests.client.fakeserver import FakeConn


async def next_pub(sub: Any) -> Publication:
    return await asyncio.wait_for(anext(sub), 2)


async def test_connect_returns_ok_map(setup: Setup) -> None:
    async with setup.client(name="app", version="1.2") as c:
        assert c.connected
        assert c.info["client"] == c.client_id == "client-1"
        assert c.info["node"] == "fake"
        first = setup.server.conns[0].received[0]
        assert first["op"] == "connect"
        assert first["client"] == {"name": "app", "version": "1.2"}
        assert "token" not in first
        assert await c.connect() is c.info  # already connected: no new connection
    assert len(setup.server.conns) == 1


async def test_token_is_sent(tcp: Setup) -> None:
    async with tcp.client(token="jwt") as c:
        assert tcp.server.conns[0].received[0]["token"] == "jwt"
        assert await c.refresh("jwt2") == 2_000_000_000
        assert c.token == "jwt2"


async def test_ids_increase_and_replies_match_out_of_order(setup: Setup) -> None:
    held: list[dict[str, Any]] = []

    async def reverse(conn: FakeConn, msg: dict[str, Any]) -> bool:
        if msg["op"] != "presence":
            return False
        held.append(msg)
        if len(held) == 3:  # answer the three in reverse order
            for m in reversed(held):
                clients = {m["channel"]: {"user": "u", "info": None}}
                await conn.send(reply_ok(m["id"], {"clients": clients}))
        return True

    setup.server.hook = reverse
    async with setup.client() as c:
        results = await asyncio.gather(*(c.presence(ch) for ch in ("a", "b", "c")))
        assert [list(r) for r in results] == [["a"], ["b"], ["c"]]
        ids = [m["id"] for m in setup.server.conns[0].received]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_error_reply_raises_reply_error(setup: Setup) -> None:
    async def limited(conn: FakeConn, msg: dict[str, Any]) -> bool:
        if msg["op"] == "publish":
            await conn.send(reply_error(msg["id"], 429, "rate limited", {"retry_after": 250}))
            return True
        return False

    setup.server.hook = limited
    async with setup.client() as c:
        with pytest.raises(ReplyError) as info:
            await c.publish("chat", "x")
        err = info.value
        assert (err.code, err.message, err.retry_after) == (429, "rate limited", 250)
        assert err.data["retry_after"] == 250
        with pytest.raises(ReplyError) as info:
            await c.unsubscribe("never")
        assert info.value.code == 409


async def test_publish_and_receive(setup: Setup) -> None:
    async with setup.client() as c:
        sub = await c.subscribe("chat:lobby")
        assert await c.publish("chat:lobby", {"text": "hi"}) is None
        pub = await next_pub(sub)
        assert pub == Publication(
            "chat:lobby", {"text": "hi"}, None, {"client": "client-1", "user": ""}
        )
        # History channel: offsets come back and are tracked.
        hsub = await c.subscribe("h:room")
        assert hsub.position == StreamPosition(0, "epoch-1")
        assert await c.publish("h:room", 1) == 1
        assert (await next_pub(hsub)).offset == 1
        assert hsub.position == StreamPosition(1, "epoch-1")


async def test_publish_nowait_errors_arrive_as_pushes(setup: Setup) -> None:
    seen: list[ReplyError] = []
    async with setup.client(on_error=seen.append) as c:
        sub = await c.subscribe("chat")
        c.publish_nowait("chat", b"bytes")
        c.publish_nowait("forbidden:x", 1)
        assert (await next_pub(sub)).data == b"bytes"
        await c.ping()  # after the error push, in order
        assert [e.code for e in c.errors] == [403]
        assert seen[0].data["op"] == "publish"
        sent = [m for m in setup.server.conns[0].received if m["op"] == "publish"]
        assert all("id" not in m for m in sent)


async def test_ping_push_is_answered_with_pong(setup: Setup) -> None:
    async with setup.client() as c:
        conn = setup.server.conns[0]
        await conn.send(push_ping())
        while True:
            _, msg = await asyncio.wait_for(setup.server.commands.get(), 2)
            if msg["op"] == "pong":
                break
        assert msg == {"op": "pong"}
        assert c.connected


async def test_join_leave_events(setup: Setup) -> None:
    events: list[ChannelEvent] = []
    async with setup.client() as c:
        await c.subscribe("chat", on_event=events.append)
        conn = setup.server.conns[0]
        await conn.send(push_join("chat", "c9", "bob"))
        await conn.send(push_leave("chat", "c9", "bob"))
        await conn.send(push_join("other", "c9", "bob"))  # not subscribed: ignored
        await c.ping()
    assert events == [
        ChannelEvent("join", "chat", "c9", "bob"),
        ChannelEvent("leave", "chat", "c9", "bob"),
    ]


async def test_history_and_presence(setup: Setup) -> None:
    async with setup.client() as c:
        for i in range(5):
            await c.publish("h:log", i)
        page = await c.history("h:log", limit=2)
        assert [p.data for p in page.publications] == [3, 4]
        assert page.position == StreamPosition(5, "epoch-1")
        page = await c.history("h:log", since=StreamPosition(1, "epoch-1"), limit=2)
        assert [p.offset for p in page.publications] == [2, 3]
        with pytest.raises(ReplyError) as info:
            await c.history("h:log", since=StreamPosition(1, "other"))
        assert info.value.code == 410
        await c.subscribe("h:log")
        assert list(await c.presence("h:log")) == ["client-1"]


async def test_reply_timeout(tcp: Setup) -> None:
    async def silent(conn: FakeConn, msg: dict[str, Any]) -> bool:
        return msg["op"] == "ping"

    tcp.server.hook = silent
    async with tcp.client(timeout=0.2) as c:
        with pytest.raises(ReplyTimeout):
            await c.ping()
        assert await c.publish("chat", 1) is None  # later replies still match


async def test_double_subscribe_is_refused_locally(setup: Setup) -> None:
    async with setup.client() as c:
        await c.subscribe("chat")
        with pytest.raises(ReplyError) as info:
            await c.subscribe("chat")
        assert info.value.code == 409
        subscribes = [m for m in setup.server.conns[0].received if m["op"] == "subscribe"]
        assert len(subscribes) == 1


async def test_unsubscribe_ends_the_iterator(setup: Setup) -> None:
    async with setup.client() as c:
        sub = await c.subscribe("chat")
        await c.publish("chat", 1)
        await asyncio.sleep(0)
        await c.ping()
        await sub.unsubscribe()
        assert [p.data async for p in sub] == [1]
        assert setup.server.conns[0].received[-1]["op"] == "unsubscribe"
        assert "chat" not in c.subscriptions


async def test_close_finishes_iterators_and_fails_commands(setup: Setup) -> None:
    c = setup.client()
    await c.connect()
    sub = await c.subscribe("chat")
    consumer = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    await c.close()
    with pytest.raises(StopAsyncIteration):
        await consumer
    with pytest.raises(Disconnected):
        await c.ping()
    with pytest.raises(Disconnected):
        c.publish_nowait("chat", 1)
    assert c.closed
    await c.close()  # idempotent
    await asyncio.wait_for(setup.server.conns[0].closed.wait(), 2)


async def test_command_before_connect_raises(tcp: Setup) -> None:
    c = tcp.client()
    with pytest.raises(Disconnected):
        await c.ping()


async def test_connect_refused_raises(tcp: Setup) -> None:
    async def refuse(conn: FakeConn, msg: dict[str, Any]) -> bool:
        if msg["op"] == "connect":
            await conn.send(reply_error(msg["id"], 401, "bad token"))
            return True
        return False

    tcp.server.hook = refuse
    c = tcp.client(token="bad")
    with pytest.raises(ReplyError) as info:
        await c.connect()
    assert info.value.code == 401
    await c.close()


async def test_unreachable_server_raises_oserror() -> None:
    from hubbub.client import Client

    c = Client("tcp://127.0.0.1:1", timeout=1)
    with pytest.raises(OSError):
        await c.connect()

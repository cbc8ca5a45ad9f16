"""The lean fast path (hubbub.client.lean) on a real node: commands, publications,
recovery after the connection is dropped, and the client's errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hubbub.client.exceptions import NOT_CONNECTED, Disconnected, ReplyError
from hubbub.client.lean import LeanSession, Listener
from hubbub.protocol.codec import Encoding, encode
from hubbub.protocol.frames import encode_frame
from hubbub.protocol.messages import push_lag, reply_error, reply_ok
from tests.client.conftest import Setup
from tests.client.fakeserver import FakeConn, FakeServer
from tests.procs import NodeProc


class Heard(Listener):
    """What the session reported."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def up(self) -> None:
        self.events.append(("up", None))

    def lost(self, reason: str | None) -> None:
        self.events.append(("lost", reason))

    def recovered(self, count: int) -> None:
        self.events.append(("recovered", count))

    def reconnected(self, since: float, now: float) -> None:
        self.events.append(("reconnected", now >= since))


async def _until(predicate: Any, what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {what} within 10 s") from None


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_commands_publications_and_recovery(node: NodeProc, transport: str) -> None:
    url = node.tcp_url if transport == "tcp" else node.ws_url
    got: list[tuple[str, Any]] = []
    heard = Heard()
    session = LeanSession(
        [url], on_pub=lambda channel, data, now: got.append((channel, data)), listener=heard
    )
    with pytest.raises(Disconnected) as early:
        session.send({"op": "ping"})
    assert early.value.reason == NOT_CONNECTED
    info = await session.connect()
    assert info["client"] and session.connected
    await session.subscribe("chat:lean", recover=True)
    for n in (1, 2):
        await session.request({"op": "publish", "channel": "chat:lean", "data": n})
    await _until(lambda: len(got) == 2, "two publications")
    with pytest.raises(ReplyError) as twice:
        await session.subscribe("chat:lean")
    assert twice.value.code == 409
    # Dropped as by a dead peer: the session reconnects (after 1 s here) and
    # recovers what was published meanwhile.
    publisher = LeanSession([url])
    await publisher.connect()
    session._backoff = lambda attempt: 1.0  # type: ignore[method-assign]
    session.abort()
    await _until(lambda: ("lost", "lost") in heard.events, "the loss")
    await publisher.request({"op": "publish", "channel": "chat:lean", "data": 3})
    await _until(lambda: ("reconnected", True) in heard.events, "the reconnect")
    assert [data for _, data in got] == [1, 2, 3]
    assert ("recovered", 1) in heard.events
    await publisher.close()
    await session.close()


# -- recovery on the fast path (issue 11's soak: what it lost, and why) ---------


class Recoveries(Heard):
    """Also hears refused recoveries and errors."""

    def recovery_refused(self, channel: str) -> None:
        self.events.append(("refused", channel))

    def error(self, key: str) -> None:
        self.events.append(("error", key))


async def _session(url: str, heard: Listener) -> tuple[LeanSession, list[Any]]:
    got: list[Any] = []
    session = LeanSession([url], on_pub=lambda channel, data, now: got.append(data), listener=heard)
    session._backoff = lambda attempt: 0.01  # type: ignore[method-assign]
    await session.connect()
    return session, got


async def _next_recovery(server: FakeServer) -> dict[str, Any]:
    """The next ``subscribe`` with ``since`` the fake server answered."""
    async with asyncio.timeout(5):
        while True:
            _, message = await server.commands.get()
            if message.get("op") == "subscribe" and "since" in message:
                return message


def _frames(*messages: dict[str, Any]) -> bytes:
    return b"".join(encode_frame(encode(m, Encoding.MSGPACK)) for m in messages)


async def test_a_subscribe_reply_and_the_publication_behind_it_in_one_read(tcp: Setup) -> None:
    """A live ``pub`` read together with the (re-)subscribe reply before it is
    handed on after the reply's publications, and counts for the position: it
    was once handed on first, so the position passed the recovered ones, which
    were then skipped (lost), and a first subscribe kept the reply's position
    behind it (recovered again: a duplicate)."""
    server = tcp.server
    channel = "h:one-read"

    async def hook(conn: FakeConn, message: dict[str, Any]) -> bool:
        if message.get("op") != "subscribe":
            return False
        conn.channels.add(channel)
        server.subs.setdefault(channel, set()).add(conn)
        since = message.get("since")
        reply: dict[str, Any] = {"channel": channel, "epoch": server.epoch}
        kept = server.history.get(channel, [])
        if since is None:  # the first: position 0, and offset 1 right behind it
            reply["offset"] = 0
            behind = await server.publish(channel, "one", deliver=False)
        else:  # recovering 2 and 3, with 4 right behind
            reply.update(recovered=True, offset=3, publications=kept[since["offset"] :])
            behind = await server.publish(channel, "four", deliver=False)
        assert behind is not None
        live = server.history[channel][behind - 1]
        await conn.send_raw(_frames(reply_ok(message["id"], reply), live))
        return True

    server.hook = hook
    heard = Recoveries()
    session, got = await _session(tcp.url, heard)
    await session.subscribe(channel, recover=True)
    await _until(lambda: got == ["one"], "the first publication")
    assert session.subs[channel].offset == 1
    for data in ("two", "three"):
        await server.publish(channel, data, deliver=False)
    session.abort()
    resubscribe = await _next_recovery(server)
    assert resubscribe["since"] == {"offset": 1, "epoch": server.epoch}
    await _until(lambda: len(got) == 4, "four publications")
    await asyncio.sleep(0.05)
    assert got == ["one", "two", "three", "four"]
    await session.close()


async def test_lag_reads_the_gap_from_history_page_by_page(tcp: Setup) -> None:
    """``lag`` (the node's broker connection broke, publications may be
    missing) makes the session read the gap with ``history`` from its
    position, page by page, holding live publications back; the overlap is
    skipped. It once only counted the ``lag``: what the node missed was lost."""
    server = tcp.server
    server.history_cap = 2  # two publications per page
    channel = "h:lag"
    heard = Recoveries()
    session, got = await _session(tcp.url, heard)
    await session.subscribe(channel, recover=True)
    await server.publish(channel, 1)
    for n in (2, 3, 4, 5, 6):
        await server.publish(channel, n, deliver=False)
    conn = server.conns[0]
    await conn.send(push_lag(channel, 0))
    await server.publish(channel, 7)  # live, before the history read: held
    await _until(lambda: len(got) >= 7, "seven publications")
    await server.publish(channel, 8)
    await _until(lambda: len(got) >= 8, "eight publications")
    await asyncio.sleep(0.05)
    assert got == [1, 2, 3, 4, 5, 6, 7, 8]
    reads = [m for m in conn.received if m.get("op") == "history"]
    assert [m["since"]["offset"] for m in reads] == [1, 3, 5]
    assert not any(kind == "refused" for kind, _ in heard.events)
    await session.close()


async def test_lag_when_the_history_is_gone_is_a_refused_recovery(tcp: Setup) -> None:
    """410 to the read of the gap (the broker lost its history: Redis
    restarted empty) is reported as a refused recovery (the client reloads);
    the live publications of the new history follow."""
    server = tcp.server
    channel = "h:gone"
    heard = Recoveries()
    session, got = await _session(tcp.url, heard)
    await session.subscribe(channel, recover=True)
    await server.publish(channel, 1)
    await _until(lambda: got == [1], "the first publication")
    server.epoch, server.history = "epoch-2", {}
    await server.conns[0].send(push_lag(channel, 0))
    await _until(lambda: ("refused", channel) in heard.events, "the refusal")
    await server.publish(channel, "new")
    await _until(lambda: got == [1, "new"], "the new history's first")
    await session.close()


async def test_a_resubscribe_refused_with_503_is_tried_again(tcp: Setup) -> None:
    """A re-subscribe answered 503 (the node's broker is back, not yet ready) is
    sent again after a backoff. It was once only counted: the channel stayed
    unsubscribed on the server while the session thought it was back (deaf)."""
    server = tcp.server
    channel = "h:retry"
    refused: list[int] = []

    async def hook(conn: FakeConn, message: dict[str, Any]) -> bool:
        if message.get("op") == "subscribe" and "since" in message and not refused:
            refused.append(message["id"])
            await conn.send(reply_error(message["id"], 503, "broker unavailable"))
            return True
        return False

    server.hook = hook
    heard = Recoveries()
    session, got = await _session(tcp.url, heard)
    await session.subscribe(channel, recover=True)
    await server.publish(channel, 1)
    await _until(lambda: got == [1], "the first publication")
    session.abort()
    await _until(lambda: ("reconnected", True) in heard.events, "the reconnect")
    assert refused and ("error", "resubscribe 503") in heard.events
    await server.publish(channel, 2)
    await _until(lambda: got == [1, 2], "a publication after the retry")
    await session.close()


async def test_a_recovery_larger_than_one_reply_is_read_from_history(
    node_factory: Callable[..., NodeProc],
) -> None:
    """On a real node: what was missed does not fit one ``max_frame`` reply, so
    the re-subscribe answers ``recovered: false`` (protocol-additions.md "Sizes
    and paging"); the session reads it from ``history`` (which pages) instead
    of giving it up as gone."""
    node = node_factory("[limits]\nmax_frame = 4096\n\n[namespaces.chat]\nhistory_size = 100\n")
    heard = Recoveries()
    session, got = await _session(node.tcp_url, heard)
    session._backoff = lambda attempt: 1.0  # type: ignore[method-assign]
    await session.subscribe("chat:big", recover=True)
    publisher = LeanSession([node.tcp_url])
    await publisher.connect()
    await publisher.request({"op": "publish", "channel": "chat:big", "data": "x" * 200})
    await _until(lambda: len(got) == 1, "the first publication")
    session.abort()
    await _until(lambda: ("lost", "lost") in heard.events, "the loss")
    for n in range(40):  # about 9 KB: two replies' worth at least
        await publisher.request({"op": "publish", "channel": "chat:big", "data": f"{n:03}" * 66})
    await _until(lambda: len(got) == 41, "every publication")
    assert got[1:] == [f"{n:03}" * 66 for n in range(40)]
    assert not any(kind == "refused" for kind, _ in heard.events)
    await publisher.close()
    await session.close()

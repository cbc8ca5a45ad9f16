"""The lean fast path (hubbub.client.lean) on a real node: commands, publications,
recovery after the connection is dropped, and the client's errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hubbub.client.exceptions import NOT_CONNECTED, Disconnected, ReplyError
from hubbub.client.lean import LeanSession, Listener
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

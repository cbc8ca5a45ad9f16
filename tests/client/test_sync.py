"""The blocking client behind HubbubUser, with plain threads (no gevent), on a real node."""

from __future__ import annotations

import threading
import time

import pytest

from hubbub.client.exceptions import Disconnected, ReplyError
from hubbub.client.sync import SyncConnection
from hubbub.loadtest.accounting.payload import make_payload, read_stamp
from tests.procs import NodeProc


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_commands_and_publications(node: NodeProc, transport: str) -> None:
    url = node.tcp_url if transport == "tcp" else node.ws_url
    got: list[tuple[str, object]] = []
    arrived = threading.Event()

    def on_pub(channel: str, data: object, now: float) -> None:
        got.append((channel, data))
        if len(got) == 3:
            arrived.set()

    conn = SyncConnection(url, on_pub=on_pub, timeout=5)
    info = conn.connect()
    assert info["client"]
    conn.call({"op": "subscribe", "channel": "chat:sync"})
    for seq in (1, 2, 3):
        conn.call({"op": "publish", "channel": "chat:sync",
                   "data": make_payload(1, 7, seq, time.monotonic(), 64)})  # fmt: skip
    assert arrived.wait(5)
    assert [read_stamp(d)[2] for _, d in got] == [1, 2, 3]  # type: ignore[index]
    assert all(channel == "chat:sync" for channel, _ in got)
    presence = conn.call({"op": "presence", "channel": "chat:sync"})
    assert info["client"] in presence["clients"]
    with pytest.raises(ReplyError) as refused:
        conn.call({"op": "subscribe", "channel": "chat:sync"})  # already subscribed
    assert refused.value.code == 409
    conn.close()
    with pytest.raises(Disconnected):
        conn.call({"op": "ping"})


def test_a_node_going_away_fails_the_waiting_call(node_factory) -> None:  # type: ignore[no-untyped-def]
    victim = node_factory()
    conn = SyncConnection(victim.tcp_url, timeout=5)
    conn.connect()
    victim.proc.kill()
    victim.proc.wait(5)
    with pytest.raises((Disconnected, OSError)):
        for _ in range(50):  # the first sends may still be accepted by the kernel
            conn.call({"op": "ping"}, timeout=1)
            time.sleep(0.05)
    assert conn.closed is not None

"""server.outbox on a fake transport: one write per iteration, the budget is what
the kernel has not taken, the slow-consumer policies and ``lag``."""

from __future__ import annotations

import asyncio

from hubbub.protocol.codes import DisconnectCode
from hubbub.server.wire import encode_for
from tests.server.fakes import connect, node_parts


def _frame(conn: object, n: int) -> bytes:
    return encode_for(conn.outbox.fmt, {"push": "pub", "channel": "c", "data": n})  # type: ignore[attr-defined]


async def test_output_of_one_iteration_goes_out_in_one_write() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        for n in range(3):
            conn.outbox.deliver(_frame(conn, n), "c")
        conn.outbox.send({"push": "ping"})
        assert transport.writes == []  # queued, not written yet
        await asyncio.sleep(0)  # the end of the loop iteration
        assert len(transport.writes) == 1
        assert [m.get("data") for m in transport.messages()] == [0, 1, 2, None]
        assert node.stats.bytes_out["tcp"] == len(transport.writes[0])


async def test_budget_is_what_the_kernel_has_not_taken() -> None:
    limits = {"outbound_buffer": 1000, "slow_consumer": "drop"}
    async with node_parts(limits=limits) as node:
        conn, transport, _ = connect(node)
        data = b"x" * 300
        for _ in range(3):
            conn.outbox.deliver(data, "c")  # 900 bytes queued: within the budget
        transport.backlog = 800  # the kernel did not take most of it
        conn.outbox.flush()
        assert conn.outbox.room == 200
        conn.outbox.deliver(data, "c")  # 300 > 200 left: dropped
        assert conn.outbox.dropped == {"c": 1} and node.stats.dropped == 1
        transport.backlog = 0  # the kernel took it all: the next flush sees the room
        conn.outbox.send({"push": "ping"})
        conn.outbox.flush()
        assert conn.outbox.room == 1000


async def test_many_publications_in_one_iteration_never_cut_a_fast_client() -> None:
    async with node_parts(limits={"outbound_buffer": 1000}) as node:
        conn, transport, _ = connect(node)
        data = b"x" * 400
        for _ in range(2):
            conn.outbox.deliver(data, "c")
        conn.outbox.flush()  # as the hub's early flush would, with the kernel keeping up
        for _ in range(2):
            conn.outbox.deliver(data, "c")
        assert conn.writable and not transport.eof


async def test_disconnect_policy_cuts_with_3002() -> None:
    async with node_parts(limits={"outbound_buffer": 100}) as node:
        conn, transport, _ = connect(node)
        conn.outbox.deliver(b"x" * 101, "c")
        assert not conn.writable and transport.eof
        (message,) = transport.messages()
        assert message["push"] == "disconnect"
        assert message["code"] == DisconnectCode.SLOW_CONSUMER
        conn.outbox.deliver(b"late", "c")  # a closing connection takes no output
        await asyncio.sleep(0)
        assert len(transport.writes) == 1


async def test_drop_policy_sends_lag_once_the_client_caught_up() -> None:
    limits = {"outbound_buffer": 100, "slow_consumer": "drop"}
    async with node_parts(limits=limits) as node:
        conn, transport, _ = connect(node)
        conn.outbox.send({"push": "ping"})
        transport.backlog = 90
        conn.outbox.flush()  # room: 10
        transport.writes.clear()
        for _ in range(3):
            conn.outbox.deliver(b"x" * 20, "feed:a")
        assert conn.outbox.dropped == {"feed:a": 3}
        assert conn.outbox in node.outboxes.lagging
        node.outboxes.send_due_lag()  # still behind: nothing yet
        await asyncio.sleep(0)
        assert transport.writes == []
        transport.backlog = 50  # at most half the budget: caught up
        node.outboxes.send_due_lag()
        await asyncio.sleep(0)
        assert transport.messages() == [{"push": "lag", "channel": "feed:a", "dropped": 3}]
        assert conn.outbox.dropped == {} and conn.outbox not in node.outboxes.lagging


async def test_a_dead_transport_does_not_raise_from_the_flush() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        transport.dead = True
        conn.outbox.send({"push": "ping"})
        conn.outbox.flush()
        assert conn.outbox.size == 0 and conn.outbox.out == []


# -- write_delay: held output ------------------------------------------------------


async def test_held_publications_share_one_write_after_the_delay() -> None:
    async with node_parts(limits={"write_delay": 0.05}) as node:
        conn, transport, _ = connect(node)
        conn.outbox.deliver_later(_frame(conn, 0), "c", 0.05)
        await asyncio.sleep(0.01)  # several iterations later: still held
        conn.outbox.deliver_later(_frame(conn, 1), "c", 0.05)
        assert transport.writes == []
        await asyncio.sleep(0.1)
        assert len(transport.writes) == 1
        assert [m["data"] for m in transport.messages()] == [0, 1]


async def test_a_reply_releases_held_output_at_the_end_of_the_iteration() -> None:
    async with node_parts() as node:
        conn, transport, _ = connect(node)
        conn.outbox.deliver_later(_frame(conn, 0), "c", 0.5)
        conn.outbox.send({"push": "ping"})  # e.g. a reply: never delayed
        await asyncio.sleep(0)
        assert len(transport.writes) == 1
        assert [m.get("push") for m in transport.messages()] == ["pub", "ping"]
        await asyncio.sleep(0.01)
        assert len(transport.writes) == 1  # the hold timer finds nothing held


async def test_holding_never_makes_a_client_look_slow() -> None:
    async with node_parts(limits={"outbound_buffer": 1000}) as node:
        conn, transport, _ = connect(node)
        for _ in range(5):  # 2000 bytes held in all: flushed early, not cut
            conn.outbox.deliver_later(b"x" * 400, "c", 0.5)
        assert conn.writable and not transport.eof
        assert len(transport.writes) == 2 and conn.outbox.held


async def test_a_shorter_delay_brings_the_hold_timer_forward() -> None:
    async with node_parts() as node:
        slow, slow_t, _ = connect(node)
        fast, fast_t, _ = connect(node, peer="10.0.0.2")
        slow.outbox.deliver_later(_frame(slow, 0), "c", 0.5)
        fast.outbox.deliver_later(_frame(fast, 1), "d", 0.01)
        await asyncio.sleep(0.05)
        assert len(fast_t.writes) == 1 and len(slow_t.writes) == 1

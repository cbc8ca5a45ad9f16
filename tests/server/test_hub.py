"""server.hub: fan-out order, encode-once, buffering, and the broker refcount.

The broker is the real in-memory engine with its calls counted; connections
are small recorders of what the hub hands them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hubbub.cluster.broker import ChannelOptions, ClientInfo, Publication
from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.memory import MemoryBroker
from hubbub.protocol.codec import decode_msgpack
from hubbub.protocol.frames import FrameDecoder
from hubbub.server import wire as server_wire
from hubbub.server.hub import Hub
from hubbub.server.metrics import Stats
from hubbub.server.wire import Format


class CountingBroker(MemoryBroker):
    """The memory broker, counting (un)subscribes; ``gate`` holds them open."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_subscribe = False

    async def subscribe(self, channel: str) -> None:
        self.calls.append(("subscribe", channel))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_subscribe:
            raise BrokerUnavailable()
        await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))
        if self.gate is not None:
            await self.gate.wait()
        await super().unsubscribe(channel)

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.calls if o == op)

    @property
    def subscribed(self) -> set[str]:
        return set(self._subscribed)


class FakeConn:
    """Records ``deliver`` and ``write`` calls as a Connection's outbox would receive them."""

    def __init__(self, fmt: Format, client_id: str = "") -> None:
        self.outbox = self  # the hub hands publications to a subscriber's outbox
        self.fmt = fmt
        self.client_id = client_id
        self.delivered: list[tuple[bytes, str]] = []
        self.written: list[bytes] = []

    def deliver(self, data: bytes, channel: str) -> None:
        self.delivered.append((data, channel))

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def messages(self) -> list[dict[str, Any]]:
        return [decode(self.fmt, data) for data, _ in self.delivered]


def decode(fmt: Format, data: bytes) -> dict[str, Any]:
    """Undo server_wire.encode_for: a TCP frame or an unmasked WebSocket frame."""
    if fmt is Format.TCP:
        (payload,) = FrameDecoder(2**31).feed(data)
        return decode_msgpack(payload)
    n = data[1] & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    payload = data[start:]
    assert data[0] == (0x82 if fmt is Format.WS_BINARY else 0x81)
    return decode_msgpack(payload) if fmt is Format.WS_BINARY else json.loads(payload)


async def settle() -> None:
    """Let background unsubscribe tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def hub() -> Any:
    broker = CountingBroker()
    hub = Hub(broker, Stats())
    await broker.start(hub)
    yield hub
    await settle()
    await broker.close()


async def subscribe(hub: Hub, conn: FakeConn, name: str) -> None:
    await hub.acquire(name)
    hub.activate(conn, name)  # type: ignore[arg-type]


def pub(channel: str, data: Any, offset: int | None = None) -> Publication:
    return Publication(channel, data, offset, "e1" if offset else None,
                       ClientInfo("c1", "u1"))


async def test_same_bytes_object_for_every_subscriber_of_a_format(hub: Hub) -> None:
    conns = [FakeConn(fmt) for fmt in (Format.TCP, Format.TCP, Format.WS_BINARY,
                                       Format.WS_BINARY, Format.WS_TEXT, Format.WS_TEXT)]
    for c in conns:
        await subscribe(hub, c, "room")
    hub.on_publication(pub("room", {"b": b"\x00\x01"}))
    for fmt in Format:
        group = [c for c in conns if c.fmt is fmt]
        assert len(group[0].delivered) == 1
        assert group[0].delivered[0][0] is group[1].delivered[0][0], f"{fmt} encoded twice"
        assert [ch for _, ch in group[0].delivered] == ["room"]
    expected = {"push": "pub", "channel": "room", "data": {"b": b"\x00\x01"},
                "from": {"client": "c1", "user": "u1"}}
    assert conns[0].messages() == [expected]
    assert conns[2].messages() == [expected]
    assert conns[4].messages() == [{**expected, "data": {"b": {"$b64": "AAE="}}}]
    assert hub.stats.deliveries == 6 and hub.stats.publications == 1


async def test_each_format_is_encoded_once(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"msgpack": 0, "json": 0}
    real_msgpack, real_json = server_wire.encode_msgpack, server_wire.encode_json

    def count_msgpack(message: dict[str, Any]) -> bytes:
        counts["msgpack"] += 1
        return real_msgpack(message)

    def count_json(message: dict[str, Any]) -> bytes:
        counts["json"] += 1
        return real_json(message)

    monkeypatch.setattr(server_wire, "encode_msgpack", count_msgpack)
    monkeypatch.setattr(server_wire, "encode_json", count_json)
    conns = [FakeConn(fmt) for fmt in Format for _ in range(50)]
    for c in conns:
        await subscribe(hub, c, "room")
    hub.on_publication(pub("room", "x"))
    assert counts == {"msgpack": 1, "json": 1}  # TCP and WS binary share the msgpack body
    assert all(len(c.delivered) == 1 for c in conns)


async def test_nothing_is_encoded_without_subscribers(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(message: dict[str, Any]) -> bytes:
        raise AssertionError("encoded for nobody")

    monkeypatch.setattr(server_wire, "encode_msgpack", boom)
    monkeypatch.setattr(server_wire, "encode_json", boom)
    hub.on_publication(pub("nobody", "x"))
    await hub.acquire("empty")  # a channel with a reference but no active subscriber
    hub.on_publication(pub("empty", "x"))


async def test_only_a_format_with_subscribers_is_encoded(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(message: dict[str, Any]) -> bytes:
        raise AssertionError("JSON encoded without a JSON subscriber")

    monkeypatch.setattr(server_wire, "encode_json", boom)
    c = FakeConn(Format.TCP)
    await subscribe(hub, c, "room")
    hub.on_publication(pub("room", "x"))
    assert len(c.delivered) == 1


async def test_order_is_preserved_per_subscriber(hub: Hub) -> None:
    conns = [FakeConn(Format.TCP), FakeConn(Format.WS_TEXT), FakeConn(Format.WS_BINARY)]
    for c in conns:
        await subscribe(hub, c, "room")
    for i in range(100):
        hub.on_publication(pub("room", i))
    for c in conns:
        assert [m["data"] for m in c.messages()] == list(range(100))


async def test_other_channels_are_not_delivered(hub: Hub) -> None:
    a, b = FakeConn(Format.TCP), FakeConn(Format.TCP)
    await subscribe(hub, a, "a")
    await subscribe(hub, b, "b")
    hub.on_publication(pub("a", 1))
    assert len(a.delivered) == 1 and b.delivered == []


async def test_buffering_then_activate_deduplicates_by_offset(hub: Hub) -> None:
    live, late = FakeConn(Format.TCP), FakeConn(Format.TCP)
    await subscribe(hub, live, "chat:x")
    await hub.acquire("chat:x")
    hub.buffer(late, "chat:x")  # type: ignore[arg-type]
    for offset in (4, 5, 6):
        hub.on_publication(pub("chat:x", offset, offset))
    assert late.delivered == [], "a buffering subscriber got live publications"
    assert [m["offset"] for m in live.messages()] == [4, 5, 6]
    # Recovery (or the history read) covered up to offset 5: only 6 is new.
    hub.activate(late, "chat:x", after_offset=5)  # type: ignore[arg-type]
    assert [m["offset"] for m in late.messages()] == [6]
    hub.on_publication(pub("chat:x", 7, 7))
    assert [m["offset"] for m in late.messages()] == [6, 7]
    assert [m["offset"] for m in live.messages()] == [4, 5, 6, 7]


async def test_activate_without_offset_hands_over_everything_kept(hub: Hub) -> None:
    c = FakeConn(Format.WS_TEXT)
    await hub.acquire("room")
    hub.buffer(c, "room")  # type: ignore[arg-type]
    hub.on_publication(pub("room", "a"))
    hub.on_publication(pub("room", "b"))
    hub.activate(c, "room")  # type: ignore[arg-type]
    assert [m["data"] for m in c.messages()] == ["a", "b"]


async def test_release_while_buffering_drops_the_buffer(hub: Hub) -> None:
    c = FakeConn(Format.TCP)
    await hub.acquire("room")
    hub.buffer(c, "room")  # type: ignore[arg-type]
    hub.release(c, "room")  # type: ignore[arg-type]
    hub.on_publication(pub("room", "late"))
    assert c.delivered == []
    await settle()
    assert "room" not in hub.channels


async def test_refcount_subscribes_and_unsubscribes_the_broker_once(hub: Hub) -> None:
    broker: CountingBroker = hub.broker  # type: ignore[assignment]
    conns = [FakeConn(Format.TCP) for _ in range(3)]
    for c in conns:
        await subscribe(hub, c, "room")
    assert broker.calls == [("subscribe", "room")]
    assert hub.subscriber_count("room") == 3
    hub.release(conns[0], "room")  # type: ignore[arg-type]
    hub.release(conns[1], "room")  # type: ignore[arg-type]
    await settle()
    assert broker.count("unsubscribe") == 0
    hub.release(conns[2], "room")  # type: ignore[arg-type]
    await settle()
    assert broker.calls == [("subscribe", "room"), ("unsubscribe", "room")]
    assert "room" not in hub.channels and "room" not in broker.subscribed
    assert hub.subscriber_count("room") == 0


async def test_concurrent_first_subscribers_subscribe_the_broker_once(hub: Hub) -> None:
    broker: CountingBroker = hub.broker  # type: ignore[assignment]
    broker.gate = asyncio.Event()
    tasks = [asyncio.create_task(hub.acquire("room")) for _ in range(5)]
    await settle()
    assert not any(t.done() for t in tasks), "acquire returned before the broker confirmed"
    broker.gate.set()
    await asyncio.gather(*tasks)
    assert broker.count("subscribe") == 1 and "room" in broker.subscribed


async def test_resubscribe_right_after_last_release_keeps_the_broker(hub: Hub) -> None:
    broker: CountingBroker = hub.broker  # type: ignore[assignment]
    a, b = FakeConn(Format.TCP), FakeConn(Format.TCP)
    await subscribe(hub, a, "room")
    hub.release(a, "room")  # type: ignore[arg-type]
    await subscribe(hub, b, "room")  # before the background unsubscribe ran
    await settle()
    assert "room" in broker.subscribed
    hub.on_publication(pub("room", "still here"))
    assert len(b.delivered) == 1


async def test_subscribe_during_a_slow_unsubscribe_ends_subscribed(hub: Hub) -> None:
    """The last subscriber leaves, the broker's UNSUBSCRIBE is in flight, and a
    new subscriber arrives: the node must end up subscribed again."""
    broker: CountingBroker = hub.broker  # type: ignore[assignment]
    a, b = FakeConn(Format.TCP), FakeConn(Format.TCP)
    await subscribe(hub, a, "room")
    broker.gate = asyncio.Event()
    hub.release(a, "room")  # type: ignore[arg-type]
    await settle()
    assert broker.calls[-1] == ("unsubscribe", "room")  # in flight, held by the gate
    joining = asyncio.create_task(subscribe(hub, b, "room"))
    await settle()
    broker.gate.set()
    await asyncio.wait_for(joining, 1)
    await settle()
    assert "room" in broker.subscribed, f"node left unsubscribed: {broker.calls}"
    await broker.publish("room", "after", options=ChannelOptions())
    assert [m["data"] for m in b.messages()] == ["after"]


async def test_failed_broker_subscribe_gives_the_reference_back(hub: Hub) -> None:
    broker: CountingBroker = hub.broker  # type: ignore[assignment]
    broker.fail_subscribe = True
    with pytest.raises(BrokerUnavailable):
        await hub.acquire("room")
    await settle()
    assert "room" not in hub.channels
    broker.fail_subscribe = False
    c = FakeConn(Format.TCP)
    await subscribe(hub, c, "room")
    assert "room" in broker.subscribed


async def test_release_of_unknown_channel_is_a_no_op(hub: Hub) -> None:
    hub.release(FakeConn(Format.TCP), "never")  # type: ignore[arg-type]
    assert "never" not in hub.channels


async def test_broker_publish_reaches_subscribers_through_the_hub(hub: Hub) -> None:
    c = FakeConn(Format.WS_BINARY)
    await subscribe(hub, c, "chat:x")
    opts = ChannelOptions(history_size=10)
    await hub.broker.publish("chat:x", b"raw", options=opts, sender=ClientInfo("c9", "u9"))
    (message,) = c.messages()
    assert message["data"] == b"raw" and message["offset"] == 1
    assert message["from"] == {"client": "c9", "user": "u9"}


async def test_join_and_leave_skip_the_client_itself(hub: Hub) -> None:
    me, other = FakeConn(Format.TCP, "me"), FakeConn(Format.WS_TEXT, "other")
    await subscribe(hub, me, "chat:x")
    await subscribe(hub, other, "chat:x")
    hub.on_join("chat:x", ClientInfo("me", "alice"))
    hub.on_leave("chat:x", ClientInfo("me", "alice"))
    assert me.written == []
    got = [json.loads(data[2:]) for data in other.written]
    assert got == [
        {"push": "join", "channel": "chat:x", "client": "me", "user": "alice"},
        {"push": "leave", "channel": "chat:x", "client": "me", "user": "alice"},
    ]


async def test_gap_sends_lag_to_every_subscriber(hub: Hub) -> None:
    a, b = FakeConn(Format.TCP), FakeConn(Format.WS_TEXT)
    await subscribe(hub, a, "room")
    await subscribe(hub, b, "room")
    hub.on_gap("room")
    assert decode(Format.TCP, a.written[0])["push"] == "lag"
    assert json.loads(b.written[0][2:])["push"] == "lag"


async def test_recovered_subscriber_skips_live_publications_at_or_below_its_position(
    hub: Hub,
) -> None:
    """Issue 11 item 1: the history read saw offset 5 before the live stream
    delivered 4 and 5; they must not reach the subscriber a second time."""
    c = FakeConn(Format.TCP)
    await hub.acquire("chat:x")
    hub.buffer(c, "chat:x")  # type: ignore[arg-type]
    hub.on_publication(pub("chat:x", 3, 3))
    hub.activate(c, "chat:x", 5, "e1")  # type: ignore[arg-type]
    assert c.delivered == []
    for offset in (4, 5, 6, 7):
        hub.on_publication(pub("chat:x", offset, offset))
    assert [m["offset"] for m in c.messages()] == [6, 7]
    assert hub.stats.duplicates_skipped == 3
    assert hub.subscriber_count("chat:x") == 1


async def test_catching_up_subscriber_takes_a_new_epoch_at_once(hub: Hub) -> None:
    c = FakeConn(Format.WS_TEXT)
    await hub.acquire("chat:x")
    hub.buffer(c, "chat:x")  # type: ignore[arg-type]
    hub.activate(c, "chat:x", 9, "old")  # type: ignore[arg-type]
    hub.on_publication(pub("chat:x", 1, 1))  # epoch "e1": the history was lost meanwhile
    assert [m["offset"] for m in c.messages()] == [1]


async def test_catching_up_subscriber_gets_presence_events_and_lag(hub: Hub) -> None:
    c = FakeConn(Format.TCP, "me")
    await hub.acquire("chat:x")
    hub.buffer(c, "chat:x")  # type: ignore[arg-type]
    hub.activate(c, "chat:x", 5, "e1")  # type: ignore[arg-type]
    hub.on_join("chat:x", ClientInfo("other", "bob"))
    hub.on_gap("chat:x")
    assert [decode(Format.TCP, d)["push"] for d in c.written] == ["join", "lag"]
    hub.release(c, "chat:x")  # type: ignore[arg-type]
    hub.on_publication(pub("chat:x", 6, 6))
    assert c.delivered == []


async def test_gap_while_buffering_is_sent_as_lag_after_activation(hub: Hub) -> None:
    """Issue 11 item 4: a gap reported while a subscriber's subscribe awaits the
    broker must not be silent."""
    c = FakeConn(Format.TCP)
    await hub.acquire("chat:x")
    hub.buffer(c, "chat:x")  # type: ignore[arg-type]
    hub.on_publication(pub("chat:x", 1, 1))
    hub.on_gap("chat:x")
    assert c.written == []  # no reply yet: nothing goes out before it
    hub.activate(c, "chat:x", 0, "e1")  # type: ignore[arg-type]
    assert [m["offset"] for m in c.messages()] == [1]
    assert [decode(Format.TCP, d) for d in c.written] == [
        {"push": "lag", "channel": "chat:x", "dropped": 0}
    ]

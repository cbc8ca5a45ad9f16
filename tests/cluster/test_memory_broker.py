"""The in-memory engine: the broker contract, plus TTL, trimming and cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hubbub.cluster.broker import Broker, ChannelOptions, ClientInfo, Publication
from hubbub.cluster.memory import MemoryBroker
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.messages import StreamPosition
from tests.cluster.contract import BrokerContract, RecordingHandler

TTL = 10.0
OPTIONS = ChannelOptions(history_size=5, history_ttl=TTL)


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest_asyncio.fixture
async def broker(handler: RecordingHandler) -> AsyncIterator[MemoryBroker]:
    engine = MemoryBroker()
    await engine.start(handler)
    yield engine
    await engine.close()


class TestMemoryBrokerContract(BrokerContract):
    async def stored(self, broker: Broker, channel: str) -> bool:
        assert isinstance(broker, MemoryBroker)
        return channel in broker._streams


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> RecordingHandler:
    return RecordingHandler()


@pytest_asyncio.fixture
async def timed(clock: FakeClock, recorder: RecordingHandler) -> AsyncIterator[MemoryBroker]:
    """A started engine on the fake clock."""
    engine = MemoryBroker(clock=clock)
    await engine.start(recorder)
    yield engine
    await engine.close()


async def test_name_and_health() -> None:
    engine = MemoryBroker()
    assert engine.name == "memory"
    assert engine.healthy


async def test_delivery_is_synchronous(timed: MemoryBroker, recorder: RecordingHandler) -> None:
    await timed.subscribe("c")
    await timed.publish("c", "now", options=OPTIONS)
    assert [p.data for p in recorder.publications] == ["now"]


async def test_history_expires_ttl_after_last_publication(
    timed: MemoryBroker, clock: FakeClock
) -> None:
    first = await timed.publish("c", 1, options=OPTIONS)
    clock.advance(TTL - 1)
    second = await timed.publish("c", 2, options=OPTIONS)  # pushes the deadline back
    clock.advance(TTL - 1)
    alive = await timed.history("c", options=OPTIONS)
    assert [p.data for p in alive.publications] == [1, 2]
    assert second is not None and alive.position == second
    clock.advance(1)  # exactly TTL after the last publication
    gone = await timed.history("c", options=OPTIONS)
    assert gone.publications == []
    assert gone.position.offset == 0
    assert first is not None and gone.position.epoch != first.epoch
    restarted = await timed.publish("c", 3, options=OPTIONS)
    assert restarted is not None and restarted.offset == 1 and restarted.epoch != first.epoch
    assert (await timed.recover("c", gone.position, options=OPTIONS)).recovered
    with pytest.raises(PositionGone):
        await timed.history("c", options=OPTIONS, since=second)
    recovery = await timed.recover("c", second, options=OPTIONS)
    assert not recovery.recovered and recovery.position == restarted


async def test_read_position_expires_without_publications(
    timed: MemoryBroker, clock: FakeClock
) -> None:
    empty = (await timed.history("c", options=OPTIONS, limit=0)).position
    assert timed._streams == {}  # reads store nothing
    clock.advance(TTL - 1)
    assert (await timed.recover("c", empty, options=OPTIONS)).recovered
    clock.advance(1)  # a history made since could have expired by now: gone
    assert not (await timed.recover("c", empty, options=OPTIONS)).recovered
    assert (await timed.history("c", options=OPTIONS)).position.epoch != empty.epoch


async def test_trimming_keeps_the_newest(timed: MemoryBroker) -> None:
    for i in range(1, 13):
        await timed.publish("c", i, options=OPTIONS)
    result = await timed.history("c", options=OPTIONS)
    assert [p.offset for p in result.publications] == [8, 9, 10, 11, 12]
    epoch = result.position.epoch
    with pytest.raises(PositionGone):
        await timed.history("c", options=OPTIONS, since=StreamPosition(6, epoch))
    tail = await timed.history("c", options=OPTIONS, since=StreamPosition(7, epoch), limit=2)
    assert [p.offset for p in tail.publications] == [8, 9]


async def test_history_size_change_resizes(timed: MemoryBroker) -> None:
    for i in range(1, 6):
        await timed.publish("c", i, options=OPTIONS)
    smaller = ChannelOptions(history_size=2, history_ttl=TTL)
    result = await timed.history("c", options=smaller)
    assert [p.offset for p in result.publications] == [4, 5]
    epoch = result.position.epoch
    assert await timed.publish("c", 6, options=smaller) == StreamPosition(6, epoch)
    larger = ChannelOptions(history_size=10, history_ttl=TTL)
    await timed.publish("c", 7, options=larger)  # what was trimmed stays trimmed
    result = await timed.history("c", options=larger)
    assert [p.offset for p in result.publications] == [5, 6, 7]


async def test_negative_limit_reads_nothing(timed: MemoryBroker) -> None:
    position = await timed.publish("c", 1, options=OPTIONS)
    assert position is not None
    assert (await timed.history("c", options=OPTIONS, limit=-1)).publications == []
    since = StreamPosition(0, position.epoch)
    assert (await timed.history("c", options=OPTIONS, since=since, limit=-1)).publications == []


async def test_no_history_position_is_stable_and_stores_nothing(timed: MemoryBroker) -> None:
    no_history = ChannelOptions()
    assert await timed.publish("a", 1, options=no_history) is None
    a = await timed.history("a", options=no_history)
    b = await timed.history("b", options=no_history, since=StreamPosition(3, "x"), limit=1)
    assert a.publications == [] and b.publications == []
    assert a.position == b.position and a.position.offset == 0 and a.position.epoch
    assert timed._streams == {}


async def test_sweep_frees_expired_streams_only(timed: MemoryBroker, clock: FakeClock) -> None:
    short = ChannelOptions(history_size=5, history_ttl=5.0)
    await timed.publish("old", 1, options=OPTIONS)
    await timed.publish("short", 1, options=short)
    await timed.history("read-only", options=OPTIONS)  # reads store nothing
    assert timed.sweep() == 0
    clock.advance(5)
    assert timed.sweep() == 1
    assert set(timed._streams) == {"old"}
    clock.advance(3)
    await timed.publish("old", 2, options=OPTIONS)  # now due at +18
    clock.advance(2)  # +10: old's first deadline passes but it lives on
    assert timed.sweep() == 0
    assert set(timed._streams) == {"old"}
    assert len(timed._deadlines) == 1
    clock.advance(8)
    assert timed.sweep() == 1
    assert timed._streams == {} and timed._deadlines == []


async def test_sweep_skips_streams_replaced_on_access(
    timed: MemoryBroker, clock: FakeClock
) -> None:
    await timed.publish("c", 1, options=OPTIONS)
    clock.advance(TTL)
    fresh = await timed.publish("c", 2, options=OPTIONS)  # the expired stream is replaced
    assert fresh is not None and fresh.offset == 1
    assert timed.sweep() == 0
    assert (await timed.history("c", options=OPTIONS)).position == fresh
    clock.advance(TTL)
    assert timed.sweep() == 1
    assert timed._streams == {} and timed._deadlines == []


async def test_background_sweep_runs_and_stops_on_close(clock: FakeClock) -> None:
    engine = MemoryBroker(clock=clock)
    engine.sweep_interval = 0.001
    await engine.start(RecordingHandler())
    await engine.publish("c", 1, options=OPTIONS)
    clock.advance(TTL)
    for _ in range(1000):
        if not engine._streams:
            break
        await asyncio.sleep(0.001)
    assert engine._streams == {}
    task = engine._sweeper
    await engine.close()
    await engine.close()
    assert task is not None and task.cancelled()
    assert engine._sweeper is None


async def test_empty_presence_is_freed(timed: MemoryBroker) -> None:
    await timed.add_presence("c", ClientInfo("c1", "u1"))
    await timed.add_presence("c", ClientInfo("c2", "u2"))
    await timed.remove_presence("c", "c1")
    assert set(timed._presence) == {"c"}
    await timed.remove_presence("c", "c2")
    await timed.remove_presence("never", "c3")
    assert timed._presence == {}


async def test_presence_returns_a_copy(timed: MemoryBroker) -> None:
    await timed.add_presence("c", ClientInfo("c1", "u1"))
    (await timed.presence("c")).clear()
    assert set(await timed.presence("c")) == {"c1"}


async def test_handler_failure_does_not_fail_publish(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(RecordingHandler):
        def on_publication(self, pub: Publication) -> None:
            raise RuntimeError("node bug")

    engine = MemoryBroker(clock=clock)
    await engine.start(Failing())
    await engine.subscribe("c")
    assert await engine.publish("c", 1, options=OPTIONS) is not None
    assert "handler failed" in caplog.text
    assert len((await engine.history("c", options=OPTIONS)).publications) == 1
    await engine.close()


async def test_without_start_nothing_is_delivered() -> None:
    engine = MemoryBroker()
    await engine.subscribe("c")
    assert await engine.publish("c", 1, options=OPTIONS) is not None
    await engine.publish_join("c", ClientInfo("c1", "u1"))
    await engine.close()

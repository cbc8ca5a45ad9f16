"""server.keepalive.Timers with time passed in: no sleeping (after aioquic)."""

from __future__ import annotations

from hubbub.server.keepalive import Due, Timers

INTERVAL, TIMEOUT = 25.0, 10.0


def connected_at(now: float) -> Timers:
    timers = Timers(now=now - 1.0, handshake_timeout=5.0)
    timers.connected(now, INTERVAL)
    return timers


def test_handshake_deadline() -> None:
    timers = Timers(now=100.0, handshake_timeout=5.0)
    assert timers.poll(100.0, INTERVAL, TIMEOUT) is Due.NOTHING
    assert timers.poll(104.999, INTERVAL, TIMEOUT) is Due.NOTHING
    assert timers.poll(105.0, INTERVAL, TIMEOUT) is Due.HANDSHAKE
    assert timers.poll(200.0, INTERVAL, TIMEOUT) is Due.HANDSHAKE


def test_no_ping_before_connect() -> None:
    timers = Timers(now=0.0, handshake_timeout=1000.0)
    assert timers.poll(INTERVAL * 3, INTERVAL, TIMEOUT) is Due.NOTHING


def test_connect_stops_the_handshake_timer() -> None:
    timers = Timers(now=0.0, handshake_timeout=5.0)
    timers.connected(4.0, INTERVAL)
    assert timers.handshake_deadline is None
    assert timers.poll(5.0, INTERVAL, TIMEOUT) is Due.NOTHING
    assert timers.poll(28.999, INTERVAL, TIMEOUT) is Due.NOTHING
    assert timers.poll(29.0, INTERVAL, TIMEOUT) is Due.PING


def test_ping_due_every_interval_while_answered() -> None:
    timers = connected_at(0.0)
    for n in range(1, 6):
        now = n * INTERVAL
        assert timers.poll(now - 0.001, INTERVAL, TIMEOUT) is Due.NOTHING
        assert timers.poll(now, INTERVAL, TIMEOUT) is Due.PING
        assert timers.poll(now, INTERVAL, TIMEOUT) is Due.NOTHING  # once per interval
        timers.activity()  # the pong
        assert timers.poll(now + TIMEOUT + 1, INTERVAL, TIMEOUT) is Due.NOTHING


def test_stale_after_ping_timeout_without_activity() -> None:
    timers = connected_at(0.0)
    assert timers.poll(INTERVAL, INTERVAL, TIMEOUT) is Due.PING
    assert timers.poll(INTERVAL + TIMEOUT - 0.001, INTERVAL, TIMEOUT) is Due.NOTHING
    assert timers.poll(INTERVAL + TIMEOUT, INTERVAL, TIMEOUT) is Due.STALE
    assert timers.poll(INTERVAL + TIMEOUT + 100, INTERVAL, TIMEOUT) is Due.STALE


def test_activity_clears_the_pong_deadline() -> None:
    timers = connected_at(0.0)
    assert timers.poll(INTERVAL, INTERVAL, TIMEOUT) is Due.PING
    timers.activity()
    assert timers.pong_deadline is None
    assert timers.poll(INTERVAL + TIMEOUT, INTERVAL, TIMEOUT) is Due.NOTHING
    # The next ping starts a new deadline.
    assert timers.poll(2 * INTERVAL, INTERVAL, TIMEOUT) is Due.PING
    assert timers.poll(2 * INTERVAL + TIMEOUT, INTERVAL, TIMEOUT) is Due.STALE


def test_unanswered_pings_keep_the_first_deadline() -> None:
    """Short interval, long timeout: later pings do not push the deadline on."""
    timers = Timers(now=0.0, handshake_timeout=5.0)
    timers.connected(0.0, 1.0)
    assert timers.poll(1.0, 1.0, 2.5) is Due.PING  # deadline 3.5
    assert timers.poll(2.0, 1.0, 2.5) is Due.PING
    assert timers.poll(3.0, 1.0, 2.5) is Due.PING
    assert timers.poll(3.5, 1.0, 2.5) is Due.STALE


def test_activity_before_any_ping_changes_nothing() -> None:
    timers = connected_at(0.0)
    timers.activity()
    assert timers.poll(INTERVAL, INTERVAL, TIMEOUT) is Due.PING

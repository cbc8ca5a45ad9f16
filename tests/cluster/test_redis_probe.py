"""The delivery probe's timing (cluster.redis_probe), time passed in."""

from __future__ import annotations

from hubbub.cluster.redis_probe import MAX_IN_FLIGHT, Probe


def listening(interval: float = 1.0, timeout: float = 3.0, at: float = 0.0) -> Probe:
    probe = Probe(interval, timeout)
    probe.start(at)
    probe.listening(at)
    return probe


def test_one_probe_per_interval_once_listening() -> None:
    probe = Probe(1.0, 3.0)
    probe.start(0.0)
    assert not probe.due(0.0) and not probe.due(5.0)  # the probe channel is not confirmed yet
    probe.listening(0.1)
    assert probe.due(0.1)
    assert probe.sent(0.1) == 1
    assert not probe.due(0.5) and not probe.due(1.09)
    assert probe.due(1.1)
    assert probe.sent(1.1) == 2


def test_a_probe_back_in_time_is_no_miss() -> None:
    probe = listening()
    seq = probe.sent(0.0)
    assert not probe.missing(2.9)
    assert probe.seen(seq, 0.004)
    assert probe.last_round_trip == 0.004
    assert not probe.missing(100.0)  # nothing in flight
    assert probe.misses == 0 and not probe.deaf


def test_a_probe_missing_for_the_timeout() -> None:
    probe = listening(at=10.0)
    probe.sent(10.0)
    assert not probe.missing(12.99)
    assert probe.missing(13.0)
    probe.missed()
    assert probe.misses == 1 and probe.deaf
    assert not probe.missing(20.0) and not probe.due(20.0)  # until the next connection


def test_the_oldest_probe_in_flight_decides() -> None:
    probe = listening()
    first = probe.sent(0.0)
    second = probe.sent(1.0)
    third = probe.sent(2.0)
    assert probe.seen(second, 2.5)  # the first was lost: the second accounts for it
    assert not probe.missing(4.9)  # the third, sent at 2.0, is due at 5.0
    assert probe.missing(5.0)
    assert not probe.seen(first, 5.0)  # no longer in flight
    assert probe.seen(third, 5.0)
    assert not probe.missing(5.0)


def test_a_probe_that_could_not_be_published_is_not_missing() -> None:
    probe = listening()
    first = probe.sent(0.0)
    second = probe.sent(1.0)
    probe.unsent(first)  # Redis down: the PUBLISH failed
    assert not probe.missing(3.5)  # the second, sent at 1.0, is due at 4.0
    assert probe.missing(4.0)
    probe.unsent(second)
    assert not probe.missing(10.0)
    probe.unsent(99)  # not in flight: nothing happens
    assert probe.misses == 0


def test_an_unconfirmed_probe_channel_is_a_miss() -> None:
    probe = Probe(1.0, 3.0)
    probe.start(0.0)
    assert not probe.missing(2.99)
    assert probe.missing(3.0)


def test_deaf_until_a_probe_of_the_new_connection_comes_back() -> None:
    probe = listening()
    old = probe.sent(0.0)
    assert probe.missing(3.0)
    probe.missed()
    probe.start(3.5)  # reconnected
    assert probe.deaf
    assert not probe.seen(old, 3.6)  # a late one of the old connection does not count
    assert probe.deaf
    probe.listening(3.6)
    seq = probe.sent(3.6)
    assert probe.seen(seq, 3.61)
    assert not probe.deaf and probe.misses == 1


def test_a_new_connection_forgets_the_probes_in_flight() -> None:
    probe = listening()
    probe.sent(0.0)
    probe.stop()  # the connection was lost
    assert not probe.missing(10.0)
    probe.start(10.0)
    probe.listening(10.1)
    assert probe.due(10.1)  # the first probe goes out at once
    assert not probe.missing(12.0)


def test_off() -> None:
    probe = Probe(0.0, 3.0)
    probe.start(0.0)
    probe.listening(0.0)
    assert not probe.enabled
    assert not probe.due(10.0) and not probe.missing(10.0)


def test_reset_clears_deaf() -> None:
    probe = listening()
    probe.sent(0.0)
    probe.missed()
    probe.reset()  # no probe channel any more (a Redis Cluster primary lost its slots)
    assert not probe.deaf and probe.misses == 1


def test_probes_in_flight_are_bounded_and_the_oldest_still_goes_missing() -> None:
    probe = listening(interval=0.01, timeout=5.0)
    sent = 0
    for i in range(10 * MAX_IN_FLIGHT):
        if probe.due(i * 0.01):
            probe.sent(i * 0.01)
            sent += 1
    assert sent == MAX_IN_FLIGHT
    assert not probe.missing(4.99) and probe.missing(5.0)  # the first one, sent at 0.0
    assert probe.seen(MAX_IN_FLIGHT, 5.0)
    assert probe.due(5.0)

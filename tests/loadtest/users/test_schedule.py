"""Open-loop scheduling under injected time: late tasks never move later slots."""

from __future__ import annotations

import random

import pytest

from hubbub.loadtest.users.schedule import (
    Pacer,
    as_wait_time,
    between,
    constant,
    constant_rate,
    poisson,
    spawn_time,
)


def run(pacer: Pacer, durations: list[float], start: float) -> list[tuple[float, float]]:
    """Play a task loop with tasks taking ``durations``; (intended, started) per task."""
    now = start
    out = []
    for took in durations:
        now += pacer.delay(now)  # sleep until due (no sleep when late)
        out.append((pacer.intended, now))
        now += took
        pacer.advance(now)
    return out


def test_constant_rate_slots_stay_on_the_absolute_schedule() -> None:
    pacer = Pacer(constant_rate(10), start=100.0, rng=random.Random(1))
    # The third task stalls for 0.35 s: three slots are overdue when it ends.
    slots = run(pacer, [0.01, 0.01, 0.35, 0.01, 0.01, 0.01, 0.01], start=100.0)
    intended = [round(i, 6) for i, _ in slots]
    assert intended == [100.1, 100.2, 100.3, 100.4, 100.5, 100.6, 100.7]
    started = [round(s, 6) for _, s in slots]
    # Overdue slots run at once, back to back, each keeping its own intended time...
    assert started[3:6] == [100.65, 100.66, 100.67]
    # ...and the schedule is back on time afterwards (not shifted by the stall).
    assert started[6] == 100.7


def test_lateness_is_measured_from_the_intended_slot() -> None:
    pacer = Pacer(constant_rate(100), start=0.0, rng=random.Random(1))
    assert pacer.intended == pytest.approx(0.01)
    assert pacer.delay(0.0) == pytest.approx(0.01)
    assert pacer.lateness(0.5) == pytest.approx(0.49)
    assert pacer.delay(0.5) == 0.0


def test_closed_loop_waits_after_each_task_ends() -> None:
    pacer = Pacer(constant(1.0), start=0.0, rng=random.Random(1))
    slots = run(pacer, [0.5, 2.0, 0.1], start=0.0)
    assert [i for i, _ in slots] == [0.0, 1.5, 4.5]


def test_between_stays_within_its_bounds() -> None:
    wait = between(1.0, 3.0)
    rng = random.Random(7)
    gaps = [wait.next_time(0.0, 10.0, rng) - 10.0 for _ in range(1000)]
    assert min(gaps) >= 1.0 and max(gaps) <= 3.0
    assert 1.8 < sum(gaps) / len(gaps) < 2.2


def test_poisson_is_open_loop_with_the_right_mean() -> None:
    wait = poisson(4.0)
    assert wait.open_loop
    rng = random.Random(3)
    t, times = 0.0, []
    for _ in range(4000):
        t = wait.next_time(t, 1e9, rng)  # ``now`` far ahead: still steps from the slot
        times.append(t)
    assert times[-1] / len(times) == pytest.approx(0.25, rel=0.05)


def test_locust_style_functions_are_closed_loop() -> None:
    class U:
        def wait_time(self) -> float:
            return 2.5

    user = U()
    wait = as_wait_time(user.wait_time, user)  # a bound method
    assert wait.next_time(0.0, 10.0, random.Random()) == 12.5
    plain = as_wait_time(lambda u: 1.0, user)
    assert plain.next_time(0.0, 3.0, random.Random()) == 4.0
    assert as_wait_time(None, user).next_time(0.0, 3.0, random.Random()) == 3.0
    with pytest.raises(TypeError):
        as_wait_time(5, user)


@pytest.mark.parametrize(
    "bad", [lambda: constant_rate(0), lambda: poisson(-1), lambda: between(2, 1)]
)
def test_bad_waits_are_refused(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        bad()


def test_spawn_times_are_absolute() -> None:
    assert [spawn_time(i, 50.0, 4.0) for i in range(4)] == [50.0, 50.25, 50.5, 50.75]
    assert spawn_time(9, 50.0, 0) == 50.0

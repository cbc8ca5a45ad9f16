"""When tasks run: Locust-style ``wait_time`` helpers and the open-loop pacer.

Two kinds of wait:

- closed loop (``between``, ``constant``, a plain function): the next task is
  due a wait *after the previous one finished*, as in Locust;
- open loop (``constant_rate``, ``poisson``): task ``k`` is due at an absolute
  time fixed in advance, however long earlier tasks took. A late task does not
  push the later ones back: overdue slots run at once, each with its own
  intended time, so latency measured from the intended time includes the
  delay (no coordinated omission).

Time is passed in (``now``): the pacer is tested without sleeping.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any


class WaitTime:
    """A ``wait_time`` value: says when the next task is due."""

    #: True when slots are fixed in advance (the pacer keeps them on schedule).
    open_loop = False

    def next_time(self, previous: float, now: float, rng: random.Random) -> float:
        """When the next task is due; ``previous`` is the last slot's intended time."""
        raise NotImplementedError


class _Between(WaitTime):
    def __init__(self, low: float, high: float) -> None:
        if low < 0 or high < low:
            raise ValueError(f"between({low}, {high}): need 0 <= low <= high")
        self.low, self.high = low, high

    def next_time(self, previous: float, now: float, rng: random.Random) -> float:
        return now + self.low + rng.random() * (self.high - self.low)

    def __repr__(self) -> str:
        return f"between({self.low}, {self.high})"


class _ConstantRate(WaitTime):
    open_loop = True

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"constant_rate({rate}): the rate must be > 0")
        self.rate = rate
        self.interval = 1.0 / rate

    def next_time(self, previous: float, now: float, rng: random.Random) -> float:
        return previous + self.interval

    def __repr__(self) -> str:
        return f"constant_rate({self.rate})"


class _Poisson(WaitTime):
    open_loop = True

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"poisson({rate}): the rate must be > 0")
        self.rate = rate

    def next_time(self, previous: float, now: float, rng: random.Random) -> float:
        return previous + rng.expovariate(self.rate)

    def __repr__(self) -> str:
        return f"poisson({self.rate})"


class _Callable(WaitTime):
    """A Locust-style function ``wait_time(user) -> seconds`` (closed loop)."""

    def __init__(self, func: Callable[[Any], float], user: Any) -> None:
        self.func, self.user = func, user

    def next_time(self, previous: float, now: float, rng: random.Random) -> float:
        return now + float(self.func(self.user))


def between(low: float, high: float) -> WaitTime:
    """Wait a uniform random time in [low, high] seconds after each task (closed loop)."""
    return _Between(low, high)


def constant(seconds: float) -> WaitTime:
    """Wait ``seconds`` after each task (closed loop)."""
    return _Between(seconds, seconds)


def constant_rate(rate: float) -> WaitTime:
    """Run ``rate`` tasks per second on a fixed absolute schedule (open loop)."""
    return _ConstantRate(rate)


def poisson(rate: float) -> WaitTime:
    """Run tasks as a Poisson process of ``rate`` per second, scheduled ahead (open loop)."""
    return _Poisson(rate)


def as_wait_time(value: Any, user: Any) -> WaitTime:
    """The :class:`WaitTime` of a ``wait_time`` attribute (None: run back to back)."""
    if value is None:
        return constant(0)
    if isinstance(value, WaitTime):
        return value
    if inspect.ismethod(value):  # a function defined on the class: already bound
        return _Callable(lambda _user: value(), user)
    if callable(value):
        return _Callable(value, user)
    raise TypeError(f"wait_time must be between(), constant_rate(), ... or a function: {value!r}")


class Pacer:
    """Slot times of one user's task loop.

    ``intended`` is the due time of the next task. After running it, call
    :meth:`advance` with the time it finished: open-loop waits step from the
    previous *intended* time (a late task leaves later slots where they were),
    closed-loop waits from ``now``.
    """

    __slots__ = ("intended", "rng", "wait")

    def __init__(self, wait: WaitTime, start: float, rng: random.Random) -> None:
        self.wait = wait
        self.rng = rng
        # Locust runs the first task at once; an open-loop schedule starts one
        # step after ``start`` (a random one for Poisson, so users spread out).
        self.intended = wait.next_time(start, start, rng) if wait.open_loop else start

    def delay(self, now: float) -> float:
        """Seconds to sleep before the next task (0 when it is already due)."""
        return max(0.0, self.intended - now)

    def lateness(self, now: float) -> float:
        """How far behind its slot a task starting at ``now`` is."""
        return max(0.0, now - self.intended)

    def advance(self, now: float) -> float:
        """Move to the next slot; returns its intended time."""
        self.intended = self.wait.next_time(self.intended, now, self.rng)
        return self.intended


def spawn_time(index: int, start: float, rate: float) -> float:
    """When the user with global index ``index`` is due to start (rate users/s overall).

    Spawning is open loop too: user ``i`` starts at ``start + i / rate`` in
    whichever worker runs it, however long earlier connects took.
    """
    return start + index / rate if rate > 0 else start

"""``chat``: users join rooms of Zipf-distributed sizes, talk, listen, check presence.

Each user joins one room: room ``k`` of ``--rooms`` (default users / 20) with
probability proportional to ``1 / k**s`` (``-o zipf=1.0``), so a few rooms are
crowded and most are small, as in real chat. Then, as a Poisson process of
``--rate`` actions per second (open loop: fixed in advance, human-like), it
says something in its room (19 times in 20) or asks who is there (presence).
Everyone receives their room's messages, their own included.

    hubbub-loadtest --scenario chat -u 10000 -r 500 -t 60s --rate 0.05
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.users.schedule import poisson
from hubbub.loadtest.users.user import User, WorkerContext, task

DEFAULT_RATE = 0.1


def room_count(config: RunConfig) -> int:
    return config.rooms if config.rooms else max(1, config.users // 20)


@functools.lru_cache(maxsize=8)
def _zipf_cumulative(rooms: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / k**s for k in range(1, rooms + 1)))


def zipf_room(rng: random.Random, rooms: int, s: float) -> int:
    """A room number in 1..rooms, room k with probability proportional to 1/k**s."""
    cumulative = _zipf_cumulative(rooms, s)
    return bisect.bisect_left(cumulative, rng.random() * cumulative[-1]) + 1


class ChatUser(User):
    """Joins a Zipf-picked room; talks and checks presence at ``--rate`` actions/s."""

    fast = True

    def __init__(self, ctx: WorkerContext, index: int) -> None:
        super().__init__(ctx, index)
        config = self.config
        self.wait_time = poisson(config.rate or DEFAULT_RATE)
        number = zipf_room(self.random, room_count(config), float(config.option("zipf", 1.0)))
        self.room = f"{config.namespace or 'chat'}:room-{number}"

    async def on_start(self) -> None:
        await self.subscribe(self.room)

    @task(19)
    async def say(self) -> None:
        await self.publish(self.room)

    @task(1)
    async def who(self) -> None:
        await self.presence(self.room)


def assign(index: int, config: RunConfig) -> type[User]:
    return ChatUser


SCENARIO = Scenario("chat", "rooms of Zipf sizes: talk, listen, presence", assign)

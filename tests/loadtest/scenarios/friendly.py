"""A scenario file as a user writes one: the friendly client.Client API."""

from __future__ import annotations

from hubbub.loadtest import User, between, constant_rate, task


class Talker(User):
    """Publishes stamped messages in a room at 5/s (open loop) and listens to it."""

    weight = 1
    wait_time = constant_rate(5)

    async def on_start(self) -> None:
        self.room = f"chat:friendly-{self.index % 2}"
        await self.subscribe(self.room)

    @task(4)
    async def say(self) -> None:
        await self.publish(self.room)

    @task(1)
    async def look(self) -> None:
        async with self.measure("history-direct"):
            await self.client.history(self.room, limit=5)


class Listener(User):
    """Only listens, and pings now and then (a closed-loop wait)."""

    weight = 3
    wait_time = between(0.2, 0.4)

    async def on_start(self) -> None:
        await self.subscribe(f"chat:friendly-{self.index % 2}")

    @task
    async def ping(self) -> None:
        async with self.measure("ping"):
            await self.client.ping()

"""hubbub-loadtest: a locust-style load generator that sizes a real-time deployment.

Write scenarios the way Locust users write locustfiles::

    from hubbub.loadtest import User, task, constant_rate

    class Publisher(User):
        wait_time = constant_rate(10)

        async def on_start(self):
            await self.subscribe("chat:lobby")

        @task
        async def say(self):
            await self.publish("chat:lobby")

and run ``hubbub-loadtest -f scenario.py -u 100 -t 30s --host tcp://127.0.0.1:7400``
(or ``--scenario chat|livefeed|connect-storm|reconnect-storm|slow-consumers``).
See docs/loadtest.md.
"""

from __future__ import annotations

from hubbub.loadtest.exceptions import StopUser
from hubbub.loadtest.users.schedule import between, constant, constant_rate, poisson
from hubbub.loadtest.users.user import User, task

__all__ = ["StopUser", "User", "between", "constant", "constant_rate", "poisson", "task"]

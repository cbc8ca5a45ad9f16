"""A locustfile using hubbub's HubbubUser (run by test_locust.py with Locust headless)."""

from __future__ import annotations

from locust import constant_throughput, task

from hubbub.loadtest.locust_user import HubbubUser


class Chat(HubbubUser):
    wait_time = constant_throughput(10)

    def on_start(self) -> None:
        self.hubbub.subscribe("chat:locust")

    @task(5)
    def say(self) -> None:
        self.hubbub.publish("chat:locust")

    @task(1)
    def who(self) -> None:
        self.hubbub.presence("chat:locust")

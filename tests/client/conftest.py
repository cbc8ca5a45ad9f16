"""Fixtures: a fake server per test, on each transport/encoding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hubbub.client import Client
from tests.client.fakeserver import FakeServer


@dataclass
class Setup:
    """A running fake server and how to make clients for it."""

    server: FakeServer
    url: str
    encoding: str

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("encoding", self.encoding)
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("timeout", 2.0)
        return Client(self.url, **kwargs)


async def start(kind: str, **options: Any) -> tuple[FakeServer, str]:
    server = FakeServer(**options)
    url = await (server.start_tcp() if kind == "tcp" else server.start_ws())
    return server, url


@pytest.fixture(params=["tcp", "ws-msgpack", "ws-json"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    kind: str = request.param
    server, url = await start("tcp" if kind == "tcp" else "ws")
    yield Setup(server, url, "json" if kind == "ws-json" else "msgpack")
    await server.stop()


@pytest.fixture
async def tcp() -> AsyncIterator[Setup]:
    server, url = await start("tcp")
    yield Setup(server, url, "msgpack")
    await server.stop()


@pytest.fixture
def make_server() -> Callable[..., Any]:
    """Start extra fake servers (several urls)."""
    return start

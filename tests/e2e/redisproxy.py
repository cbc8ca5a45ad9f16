"""A TCP proxy in front of redis-server that can hold back one kind of node
connection, to make the faults of issue 11 happen on demand.

A node opens three connections to a shard and names each (``CLIENT SETNAME
hubbub-<node>-cmd``, ``-sub``, ``-health``). The proxy reads the name from the
first bytes a connection sends and can then, for the pub/sub connections only,
delay what Redis sends by :attr:`RedisProxy.sub_delay` seconds (the live stream
lags behind the command connection, as under load) or drop it silently
(:attr:`RedisProxy.sub_deaf`: a half-open connection that no error reveals).
It runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.procs import free_port


class RedisProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.sub_delay = 0.0
        self.sub_deaf = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        first = await reader.read(65536)
        is_sub = b"-sub" in first
        up_writer.write(first)
        self._spawn(self._pump(reader, up_writer, sub=False))
        self._spawn(self._pump(up_reader, writer, sub=is_sub))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, sub: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                if sub and self.sub_deaf:
                    continue
                if sub and self.sub_delay:
                    loop.call_later(self.sub_delay, _write, writer, data)
                else:
                    writer.write(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if sub and self.sub_delay:
                await asyncio.sleep(self.sub_delay)
            with contextlib.suppress(Exception):
                writer.transport.abort()


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.transport.is_closing():
        writer.write(data)

"""A worker process: ``python -m loadtest.running.worker``, started by the coordinator.

It talks JSON lines: commands on stdin, reports on the original stdout
(``print`` in a scenario goes to stderr instead, so it cannot corrupt them).
The first command is ``{"type": "config", "worker": i, "config": {...}}``.
Runs on uvloop with the fd limit raised as far as allowed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import sys
from typing import Any

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.running.runner import Runner
from hubbub.loadtest.scenarios import ScenarioError, load


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Channel:
    """The JSON-lines link to the coordinator."""

    def __init__(self) -> None:
        self.out = os.dup(1)
        os.dup2(2, 1)  # stray prints go to stderr
        sys.stdout = sys.stderr

    def emit(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(self.out, view)
            view = view[n:]

    async def commands(self) -> asyncio.StreamReader:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 30)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return reader


async def serve(channel: Channel) -> int:
    reader = await channel.commands()
    first = json.loads(await reader.readline())
    config = RunConfig.from_json(json.dumps(first["config"]))
    worker = int(first["worker"])
    limit = raise_fd_limit()
    try:
        scenario = load(config)
    except ScenarioError as exc:
        channel.emit({"type": "error", "message": str(exc)})
        return 2
    need = config.users_of(worker) + 64
    channel.emit({"type": "ready", "fd_limit": limit, "fd_needed": need})
    runner = Runner(config, worker, scenario, channel.emit)
    pending: set[asyncio.Task[None]] = set()
    while True:
        line = await reader.readline()
        if not line:
            return 1  # the coordinator went away
        command = json.loads(line)
        kind = command.get("type")
        if kind == "start":
            runner.start(float(command["t0"]))
        elif kind == "all_spawned":
            gc.freeze()  # see Runner._tick_report
            runner.ctx.all_spawned.set()
        elif kind == "stop":
            task = asyncio.get_running_loop().create_task(runner.stop())
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif kind == "account":
            await asyncio.gather(*pending)
            await runner.account(command["streams"])
            return 0
        elif kind == "quit":
            return 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    channel = Channel()
    try:
        import uvloop

        code = uvloop.run(serve(channel))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
